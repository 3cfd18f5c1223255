//! A tiny HTTP receiver of webhooks and pings, and a plain HTTP GET, for the CLI's tests.

/// A request received by [`Receiver`].
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: String,
}

/// A tiny HTTP server on 127.0.0.1 that answers 200 to everything and records the requests.
pub(crate) struct Receiver {
    pub(crate) url: String,
    requests: std::sync::mpsc::Receiver<Received>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                );
                let _ = tx.send(Received {
                    method,
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
        });
        Receiver { url, requests: rx }
    }

    /// The next request, waiting up to 30 s.
    pub(crate) fn next(&self) -> Received {
        self.requests
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a request within 30s")
    }

    /// The next request within `timeout`, if one comes.
    pub(crate) fn next_within(&self, timeout: std::time::Duration) -> Option<Received> {
        self.requests.recv_timeout(timeout).ok()
    }
}

/// `GET path` from `addr` (`host:port`): the whole response, status line first.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}
