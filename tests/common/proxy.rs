//! A TCP proxy in front of Azurite that can cut one host off: while cut, it accepts connections
//! and reads what is sent but forwards nothing either way (a path to the store that holds every
//! byte, as a black-holed route does), so requests neither fail nor finish.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream`, forwarding until [`Proxy::cut`].
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || pump(from, to, &c));
                }
            }
        });
        Proxy { port, cut }
    }

    /// From now on nothing gets through (connections stay open).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Everything gets through again (what was held back included).
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `conn` (an Azurite connection string on 127.0.0.1) pointed at this proxy.
    pub fn connection_string(&self, conn: &str) -> String {
        let upstream = upstream_port(conn);
        conn.replace(
            &format!("127.0.0.1:{upstream}"),
            &format!("127.0.0.1:{}", self.port),
        )
    }
}

/// The port of the blob endpoint in an Azurite connection string.
pub fn upstream_port(conn: &str) -> u16 {
    let at = conn
        .find("127.0.0.1:")
        .expect("an Azurite endpoint on 127.0.0.1")
        + 10;
    conn[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
