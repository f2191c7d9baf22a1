//! Real network faults between a gatehouse and its PostgreSQL: the gatehouse runs in its own
//! network namespace (`ip netns`), reaching the database over a veth link through a TCP relay on
//! the host's end, and the test answers over a second, clean link.
//!
//! - **Loss**: nftables rules in the namespace drop every packet on the database link, both
//!   ways, without a reset: the connections stay open and go silent (half-open).
//! - **Latency**: the relay holds each chunk for the delay in each direction. (`tc netem`
//!   would be the usual tool, but this machine's kernel has no `sch_netem`; the relay's delay is
//!   on the same TCP path, pipelined as a slow link is.)
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). [`Sandbox::create`] says why when it
//! cannot, and the tests skip loudly.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A network namespace with two veth links to the host: `db` (faults) and `api` (clean).
pub struct Sandbox {
    pub name: String,
    pub db: Link,
    pub api: Link,
}

/// One veth pair: the host's end and the namespace's end.
pub struct Link {
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    ns_if: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Sandbox {
    /// A fresh namespace, or why there cannot be one here.
    pub fn create() -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let second_octet = 100 + (std::process::id() % 100) as u8;
        let name = format!("gh{tag}");
        run(&["nft", "--version"]).map_err(|e| format!("nftables: {e}"))?;
        run(&["ip", "netns", "add", &name])?;
        let mut sandbox = Self {
            name: name.clone(),
            db: Link::placeholder(),
            api: Link::placeholder(),
        };
        // From here on, Drop deletes the namespace (and with it every veth pair).
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ])?;
        sandbox.db = sandbox.link(&format!("ghd{tag}"), [10, second_octet, n as u8, 0])?;
        sandbox.api = sandbox.link(&format!("gha{tag}"), [10, second_octet, n as u8, 4])?;
        Ok(sandbox)
    }

    /// A veth pair `{prefix}h` (host) / `{prefix}n` (namespace) on the /30 at `net`.
    fn link(&self, prefix: &str, net: [u8; 4]) -> Result<Link, String> {
        let (host_if, ns_if) = (format!("{prefix}h"), format!("{prefix}n"));
        let host_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 1);
        let ns_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 2);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        run(&["ip", "link", "set", &ns_if, "netns", &self.name])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        self.exec(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        self.exec(&["ip", "link", "set", &ns_if, "up"])?;
        Ok(Link {
            host_ip,
            ns_ip,
            ns_if,
        })
    }

    fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Drops every packet on the database link, both ways, silently.
    pub fn cut_database_link(&self) {
        let ns_if = &self.db.ns_if;
        let rules = format!(
            "table inet fault {{\n\
             chain in {{ type filter hook input priority 0; iifname \"{ns_if}\" drop; }}\n\
             chain out {{ type filter hook output priority 0; oifname \"{ns_if}\" drop; }}\n\
             }}\n"
        );
        let file = std::env::temp_dir().join(format!("{}-fault.nft", self.name));
        std::fs::write(&file, rules).expect("write nft rules");
        self.exec(&["nft", "-f", &file.to_string_lossy()])
            .expect("install the drop rules");
    }

    /// Lets the database link's packets through again.
    pub fn mend_database_link(&self) {
        self.exec(&["nft", "delete", "table", "inet", "fault"])
            .expect("remove the drop rules");
    }
}

impl Link {
    fn placeholder() -> Self {
        Self {
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
            ns_if: String::new(),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A TCP relay from `listen` to `target`, holding each chunk for the current delay in each
/// direction. Stops (with its connections) on drop.
pub struct Relay {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(listen: Ipv4Addr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind((listen, 0)).await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pipe(client_read, server_write, delay.clone()));
                connections.spawn(pipe(server_read, client_write, delay.clone()));
            }
        });
        Self {
            addr,
            delay_ms,
            task,
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction, each chunk due `delay` after it was read (so chunks overlap in
/// flight, as on a slow link, rather than queueing behind each other's delay).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
