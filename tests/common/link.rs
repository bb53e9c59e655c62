//! A network link the test can cut: a TCP relay on a free loopback port to another port.
//! Cut, it drops every connection through it and refuses new ones (they are closed at
//! once), as a WAN link that goes down does; restored, it relays again.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A relay from `127.0.0.1:port` to another loopback port; stopped on drop.
pub struct Link {
    /// Where to connect to reach the other side.
    pub port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Relays connections on a free port to `127.0.0.1:to`.
    pub fn start(to: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port for the link");
        let port = listener.local_addr().expect("its address").port();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let (up, open, stop) = (Arc::new(AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())), Arc::default());
        let (u, o, s): (Arc<AtomicBool>, Arc<Mutex<Vec<TcpStream>>>, Arc<AtomicBool>) =
            (up.clone(), open.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((inbound, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if !u.load(Ordering::SeqCst) {
                    continue; // cut: closed at once
                }
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                for (from, into) in [(&inbound, &outbound), (&outbound, &inbound)] {
                    let (Ok(mut from), Ok(mut into)) = (from.try_clone(), into.try_clone()) else { continue };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
                if let Ok(mut open) = o.lock() {
                    open.extend([inbound, outbound]);
                }
            }
        });
        Link { port, up, open, stop, thread: Some(thread) }
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().expect("the connections").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
