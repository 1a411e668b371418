//! A redis-server started for one test (killed on drop) and a minimal RESP2 client: enough to run
//! the shared store's calls the way a host does (EVALSHA, NOSCRIPT, EVAL).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use traffic_control_core::{script_sha1, ReplyValue, StoreCall, SCRIPT};

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Resp>),
}

pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts redis-server on a free port, or `None` when it is not installed: the test then says
    /// so and passes, unless TC_REQUIRE_REDIS=1 (set by scripts/test.sh, which installs it).
    pub(crate) fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !found {
            if std::env::var("TC_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("redis-server not found and TC_REQUIRE_REDIS=1 (apt-get install -y redis-server)");
            }
            eprintln!("SKIPPED: redis-server not found (apt-get install -y redis-server)");
            return None;
        }
        // Ports come from below Linux's ephemeral range (32768-60999), unique per test in this process
        // and spread by pid across processes: a port picked by binding to :0 can meanwhile be the local
        // end of another test's connection or the next pick of a test alongside (seen: the probe then
        // reached a server that was going away). The server that answers must report this child's pid;
        // a server that exited or does not answer is started again on the next port.
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let base = 20_000 + (std::process::id() % 400) as u16 * 25;
        for _attempt in 0..8 {
            let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 25;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let dir = std::env::temp_dir().join(format!("tc-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let mut server = RedisServer { child, port, dir };
            if server.wait_ready() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of 8 ports");
    }

    /// Waits until this child answers on its port; false when it exited or another server answers.
    fn wait_ready(&mut self) -> bool {
        let pid = format!("process_id:{}", self.child.id());
        // The test harness waits for a real server with a real clock; the core never does.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(info) = Self::info(self.port) {
                return info.lines().any(|l| l.trim() == pid);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return false;
            }
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `INFO server` from whatever listens on `port`, or `None` on any error.
    fn info(port: u16) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"INFO server\r\n").ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let n: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; n + 2];
        r.read_exact(&mut buf).ok()?;
        String::from_utf8(buf).ok()
    }

    pub(crate) fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Round trips made (for the tests that count them).
    pub(crate) round_trips: u64,
    /// The server's port (another connection: a subscriber).
    pub(crate) port: u16,
}

impl Client {
    pub(crate) fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Client { reader: BufReader::new(s.try_clone().unwrap()), writer: s, round_trips: 0, port }
    }

    pub(crate) fn cmd<S: AsRef<str>>(&mut self, args: &[S]) -> Resp {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref().as_bytes();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).unwrap();
        self.round_trips += 1;
        self.read()
    }

    fn read(&mut self) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Resp::Bulk(Some(String::from_utf8(buf).unwrap()))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Resp::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected RESP type {other:?}"),
        }
    }

    /// Runs a store call as every host does: EVALSHA, and EVAL on NOSCRIPT.
    pub(crate) fn run(&mut self, call: &StoreCall) -> Vec<ReplyValue> {
        let mut reply = self.cmd(&call.evalsha_command());
        if matches!(&reply, Resp::Error(e) if e.starts_with("NOSCRIPT")) {
            let mut c = call.evalsha_command();
            c[0] = "EVAL".into();
            c[1] = SCRIPT.into();
            reply = self.cmd(&c);
        }
        to_values(reply)
    }

    /// This connection, subscribed to `channel` (the store's wake-ups): see [`Client::published`].
    pub(crate) fn subscribe(mut self, channel: &str) -> Client {
        self.cmd(&["SUBSCRIBE", channel]);
        self
    }

    /// For a subscribed connection: how many messages were published to it so far. A PING answered
    /// after them: what a script published before this call is read, never waited for.
    pub(crate) fn published(&mut self) -> usize {
        self.writer.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut n = 0;
        loop {
            match self.read() {
                Resp::Array(items) if items.first() == Some(&Resp::Bulk(Some("message".into()))) => n += 1,
                _ => return n,
            }
        }
    }

    pub(crate) fn script_loaded(&mut self) -> bool {
        self.cmd(&["SCRIPT", "EXISTS", script_sha1()]) == Resp::Array(vec![Resp::Int(1)])
    }
}

pub(crate) fn to_values(reply: Resp) -> Vec<ReplyValue> {
    match reply {
        Resp::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Resp::Int(v) => ReplyValue::Int(v),
                Resp::Bulk(Some(s)) | Resp::Simple(s) => ReplyValue::Text(s),
                other => panic!("unexpected reply element {other:?}"),
            })
            .collect(),
        other => panic!("script failed: {other:?}"),
    }
}
