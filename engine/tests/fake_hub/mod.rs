//! A Hugging Face Hub lookalike on 127.0.0.1 for the download tests: resolve URLs answer like
//! the Hub (302 to a blob URL for LFS files with `X-Linked-Etag`/`X-Linked-Size`, 200 with `ETag`
//! for small files, `X-Repo-Commit` on both, `X-Error-Code` on errors), blob URLs honour `Range`.
//! Faults can be armed: break a transfer off, throttle it, or corrupt it. The server stops when
//! dropped, and by itself after a minute whatever happens.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const LIFETIME: Duration = Duration::from_secs(60);

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct Repo {
    pub files: HashMap<String, Vec<u8>>,
    /// When set, requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Repo {
    pub fn from_dir(dir: &Path) -> Self {
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(dir).expect("fixture dir") {
            let entry = entry.expect("fixture entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).expect("fixture file"));
        }
        Self { files, token: None }
    }
}

/// Faults, each used once.
#[derive(Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of the next blob transfer.
    pub break_after: Option<usize>,
    /// Flip a byte in the next blob transfer.
    pub corrupt: bool,
    /// Sleep this long between 64 KiB chunks of every blob transfer.
    pub throttle: Option<Duration>,
}

struct State {
    repos: HashMap<String, Repo>,
    faults: Mutex<Faults>,
    seen: Mutex<Vec<Seen>>,
    addr: SocketAddr,
}

pub struct FakeHub {
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: HashMap<String, Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(State {
            repos,
            faults: Mutex::default(),
            seen: Mutex::default(),
            addr: listener.local_addr().expect("addr"),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + LIFETIME;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = state.clone();
                            std::thread::spawn(move || serve(&state, stream));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Blob GETs of `file` of `repo` seen so far.
    pub fn blob_gets(&self, repo: &str, file: &str) -> Vec<Seen> {
        let path = format!("/blobs/{}", sha256_hex(&self.state.repos[repo].files[file]));
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path == path)
            .collect()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn serve(state: &State, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let seen = Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    state.seen.lock().unwrap().push(seen.clone());
    let mut out = stream;
    let _ = if let Some(sha) = path.strip_prefix("/blobs/") {
        serve_blob(state, &seen, sha, &mut out)
    } else {
        serve_resolve(state, &seen, &mut out)
    };
    let _ = out.flush();
}

fn respond(out: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn error(out: &mut TcpStream, status: &str, code: &str) -> std::io::Result<()> {
    respond(
        out,
        status,
        &[
            ("X-Error-Code", code.to_owned()),
            ("Content-Length", "0".to_owned()),
        ],
    )
}

/// `/{org}/{name}/resolve/{rev}/{file}`
fn serve_resolve(state: &State, seen: &Seen, out: &mut TcpStream) -> std::io::Result<()> {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = parts[..] else {
        return error(out, "404 Not Found", "EntryNotFound");
    };
    let Some(repo) = state.repos.get(&format!("{org}/{name}")) else {
        return error(out, "401 Unauthorized", "RepoNotFound");
    };
    if let Some(token) = &repo.token
        && seen.authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        return error(out, "401 Unauthorized", "GatedRepo");
    }
    if rev != "main" && rev != COMMIT {
        return error(out, "404 Not Found", "RevisionNotFound");
    }
    let Some(bytes) = repo.files.get(file) else {
        return error(out, "404 Not Found", "EntryNotFound");
    };
    let sha = sha256_hex(bytes);
    let commit = ("X-Repo-Commit", COMMIT.to_owned());
    if file.ends_with(".safetensors") {
        // An LFS file: the Hub redirects to its blob store and tells the sha256 and size.
        return respond(
            out,
            "302 Found",
            &[
                commit,
                // Another host name, as the Hub's blob store is on another host.
                (
                    "Location",
                    format!("http://localhost:{}/blobs/{sha}", state.addr.port()),
                ),
                ("X-Linked-Etag", format!("\"{sha}\"")),
                ("X-Linked-Size", bytes.len().to_string()),
                ("ETag", "\"not-the-blob-etag\"".to_owned()),
                ("Content-Length", "0".to_owned()),
            ],
        );
    }
    // A git-stored file: a 40-hex etag (a git blob id on the real Hub) and the bytes.
    respond(
        out,
        "200 OK",
        &[
            commit,
            ("ETag", format!("W/\"{}\"", &sha[..40])),
            ("Content-Length", bytes.len().to_string()),
        ],
    )?;
    if seen.method == "GET" {
        out.write_all(bytes)?;
    }
    Ok(())
}

fn serve_blob(state: &State, seen: &Seen, sha: &str, out: &mut TcpStream) -> std::io::Result<()> {
    let Some(bytes) = state
        .repos
        .values()
        .flat_map(|r| r.files.values())
        .find(|b| sha256_hex(b) == sha)
    else {
        return error(out, "404 Not Found", "EntryNotFound");
    };
    let (break_after, corrupt, throttle) = {
        let mut f = state.faults.lock().unwrap();
        (
            f.break_after.take(),
            std::mem::take(&mut f.corrupt),
            f.throttle,
        )
    };
    let start = seen.range.as_deref().and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    let len = bytes.len();
    let mut body = match start {
        Some(s) if s < len => {
            respond(
                out,
                "206 Partial Content",
                &[
                    ("Content-Length", (len - s).to_string()),
                    ("Content-Range", format!("bytes {s}-{}/{len}", len - 1)),
                ],
            )?;
            bytes[s..].to_vec()
        }
        Some(_) => return respond(out, "416 Range Not Satisfiable", &[]),
        None => {
            respond(out, "200 OK", &[("Content-Length", len.to_string())])?;
            bytes.clone()
        }
    };
    if corrupt {
        body[0] ^= 0xff;
    }
    if let Some(n) = break_after {
        body.truncate(n);
    }
    for chunk in body.chunks(64 * 1024) {
        out.write_all(chunk)?;
        if let Some(t) = throttle {
            std::thread::sleep(t);
        }
    }
    Ok(())
}
