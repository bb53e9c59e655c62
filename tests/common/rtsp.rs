//! An RTSP server (gst-rtsp-server) on 127.0.0.1, for the tests of RTSP cameras.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// An RTSP server (gst-rtsp-server) on 127.0.0.1 streaming an H.264 clip at its own pace.
pub struct RtspServer {
    pub port: u16,
    /// SETUP requests received: one per stream a client set up.
    pub setups: Arc<AtomicUsize>,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspServer {
    pub fn start(port: u16, clip: &Path) -> RtspServer {
        let launch = format!(
            "( filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            clip.display()
        );
        RtspServer::serve(port, launch)
    }

    /// Serves the media described by `launch` (gst-rtsp-server's syntax: `payN` elements).
    pub fn serve(port: u16, launch: String) -> RtspServer {
        RtspServer::serve_to(port, launch, None)
    }

    /// As [`RtspServer::serve`], to clients that log in with `login` (user, password) by
    /// basic authentication, when given.
    pub fn serve_to(port: u16, launch: String, login: Option<(&str, &str)>) -> RtspServer {
        gstreamer::init().unwrap();
        let login = login.map(|(user, password)| rtsp::RTSPAuth::make_basic(user, password).to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        let setups = Arc::new(AtomicUsize::new(0));
        let counted = setups.clone();
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let ml = main_loop.clone();
        let thread = std::thread::spawn(move || {
            ctx.with_thread_default(|| {
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                let factory = rtsp::RTSPMediaFactory::new();
                factory.set_launch(&launch);
                if let Some(basic) = &login {
                    let auth = rtsp::RTSPAuth::new();
                    let token = rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer").build();
                    auth.add_basic(basic, &token);
                    server.set_auth(Some(&auth));
                    let role = gstreamer::Structure::builder("viewer")
                        .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                        .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                        .build();
                    factory.add_role_from_structure(&role);
                }
                server.mount_points().unwrap().add_factory("/cam", factory);
                server.connect_client_connected(move |_, client| {
                    let counted = counted.clone();
                    client.connect_setup_request(move |_, _| {
                        counted.fetch_add(1, Ordering::SeqCst);
                    });
                });
                let source = server.attach(Some(&ctx)).expect("RTSP server binds");
                tx.send(server.bound_port() as u16).unwrap();
                ml.run();
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                if let Some(src) = ctx.find_source_by_id(&source) {
                    src.destroy();
                }
                // Let the removals reach the sockets.
                while ctx.iteration(false) {}
            })
            .unwrap();
        });
        let port = rx.recv_timeout(Duration::from_secs(10)).expect("RTSP server started");
        RtspServer { port, setups, main_loop, thread: Some(thread) }
    }

    pub fn stop(mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Options for a camera reading `rtsp://127.0.0.1:{port}/cam` at `width`, TCP, no jitter
/// buffer latency.
pub fn camera_options(name: &str, port: u16, width: u32) -> clefd::source::CameraOptions {
    clefd::source::CameraOptions {
        spec: clefd::source::SourceSpec::Rtsp { location: format!("rtsp://127.0.0.1:{port}/cam") },
        ..super::file_camera(name, Path::new("/unused"), width, clefd::source::DecoderChoice::Auto)
    }
}
