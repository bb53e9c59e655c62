//! A scripted MQTT 5 peer on a loopback port, for the publisher's tests of refusals that
//! may clear. mosquitto never answers a PUBLISH with "quota exceeded" or "unspecified
//! error", so no real broker on this machine can play this part; the peer speaks just
//! enough MQTT 5 for the publisher (CONNACK, PUBACK with the reason the script picks,
//! SUBACK, UNSUBACK, PINGRESP) and records what it was sent. One thread per connection;
//! a connection ends when the client closes it, or after a minute of silence.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An event offered to the peer, for the script to answer.
#[derive(Debug, Clone)]
pub(in crate::mqtt) struct Offer {
    /// Its `seq` (the JSON payload's).
    pub seq: u64,
    /// How often the peer was offered this `seq` before.
    pub times: usize,
    /// How many events this connection offered before.
    pub on_connection: usize,
}

/// What the peer saw, in order.
#[derive(Debug, Clone)]
pub(super) enum Seen {
    /// A connection was accepted (CONNACK sent) at this time.
    Connected(Instant),
    /// An event, and the PUBACK reason code it got.
    Event {
        /// Its topic.
        topic: String,
        /// Its `seq`.
        seq: u64,
        /// Its payload.
        payload: Vec<u8>,
        /// The PUBACK reason code sent back.
        reason: u8,
    },
}

/// How long a connection may stay silent before the peer ends it: longer than any
/// keep-alive the tests use, so only a hung client is cut.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

type Script = dyn Fn(&Offer) -> u8 + Send + Sync;

/// The peer: listening until dropped.
pub(in crate::mqtt) struct Peer {
    /// Its loopback port.
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    /// Listens on a free loopback port; `script` picks each event's PUBACK reason code.
    pub(in crate::mqtt) fn start(script: impl Fn(&Offer) -> u8 + Send + Sync + 'static) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (seen, script) = (seen2.clone(), script.clone());
                // A client that hangs without closing cannot keep the thread for good.
                let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                std::thread::spawn(move || serve(stream, &seen, &*script));
            }
        });
        Peer { port, seen, stop }
    }

    /// Everything seen so far.
    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One packet: its type and flags (the fixed header's first byte) and its body.
fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).ok()?;
    let len = read_varint(&mut || {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).ok().map(|()| b[0])
    })?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// An MQTT variable byte integer, a byte at a time from `next`.
fn read_varint(next: &mut dyn FnMut() -> Option<u8>) -> Option<usize> {
    let mut value = 0usize;
    for shift in [0, 7, 14, 21] {
        let b = next()?;
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A reader over a packet's body.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        self.take(n).map(|b| String::from_utf8_lossy(b).into_owned())
    }
    /// Skips MQTT 5 properties.
    fn properties(&mut self) -> Option<()> {
        let n = read_varint(&mut || self.take(1).map(|b| b[0]))?;
        self.take(n).map(|_| ())
    }
    /// Topic filters up to the end (each followed by `options` bytes): how many.
    fn filters(&mut self, options: usize) -> Option<usize> {
        let mut n = 0;
        while !self.0.is_empty() {
            self.string()?;
            self.take(options)?;
            n += 1;
        }
        Some(n)
    }
}

/// A SUBACK or UNSUBACK (`kind`, the first byte) to the SUBSCRIBE or UNSUBSCRIBE in `b`
/// (whose filters are each followed by `options` bytes): its packet id, no properties,
/// `code` for each filter.
fn ack(kind: u8, b: &mut Body<'_>, options: usize, code: u8) -> Option<Vec<u8>> {
    let pkid = b.u16()?;
    b.properties()?;
    let filters = b.filters(options)?;
    let mut p = vec![kind, u8::try_from(3 + filters).ok()?];
    p.extend(pkid.to_be_bytes());
    p.push(0);
    p.extend(std::iter::repeat_n(code, filters));
    Some(p)
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, script: &Script) {
    let mut offered = 0;
    while let Some((first, body)) = read_packet(&mut stream) {
        let mut b = Body(&body);
        let reply = match first >> 4 {
            1 => {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen::Connected(Instant::now()));
                Some(vec![0x20, 3, 0, 0, 0])
            }
            3 => publish(first, &mut b, seen, script, &mut offered),
            8 => ack(0x90, &mut b, 1, 1),
            10 => ack(0xB0, &mut b, 0, 0),
            12 => Some(vec![0xD0, 0]),
            _ => return,
        };
        if reply.is_some_and(|r| stream.write_all(&r).is_err()) {
            return;
        }
    }
}

/// A PUBLISH: recorded when it is an event; QoS 1 gets a PUBACK with the script's reason.
fn publish(
    first: u8,
    b: &mut Body<'_>,
    seen: &Mutex<Vec<Seen>>,
    script: &Script,
    offered: &mut usize,
) -> Option<Vec<u8>> {
    let topic = b.string()?;
    let qos1 = (first >> 1) & 3 == 1;
    let pkid = if qos1 { b.u16()? } else { 0 };
    b.properties()?;
    let payload = b.0.to_vec();
    let seq = serde_json::from_slice::<serde_json::Value>(&payload).ok().and_then(|v| v.get("seq")?.as_u64());
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let times = seen.iter().filter(|e| matches!(e, Seen::Event { seq: was, .. } if Some(*was) == seq)).count();
    let reason = match seq {
        Some(seq) => {
            let reason = script(&Offer { seq, times, on_connection: *offered });
            *offered += 1;
            seen.push(Seen::Event { topic, seq, payload, reason });
            reason
        }
        None => 0,
    };
    // PUBACK: packet id, reason code, no properties.
    let [hi, lo] = pkid.to_be_bytes();
    qos1.then_some(vec![0x40, 4, hi, lo, reason, 0])
}
