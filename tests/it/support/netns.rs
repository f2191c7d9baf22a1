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
//! cannot ([`Unavailable`]), and the tests skip loudly; any other failure of the set-up panics.

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

/// Why there can be no namespace here: not root, or a tool is missing. Any other failure of
/// the set-up panics: it is a fault of the test, not of the machine.
#[derive(Debug)]
pub struct Unavailable(pub String);

fn run(args: &[&str]) -> Result<(), String> {
    run_with_input(args, None)
}

fn run_with_input(args: &[&str], input: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    }
    let output = child
        .wait_with_output()
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

impl Sandbox {
    /// A fresh namespace; [`Unavailable`] when this machine cannot have one.
    pub fn create() -> Result<Self, Unavailable> {
        if !is_root() {
            return Err(Unavailable("not root".into()));
        }
        for tool in [["ip", "-V"], ["nft", "--version"]] {
            run(&tool).map_err(|e| Unavailable(format!("{}: {e}", tool[0])))?;
        }
        // Random names (interface names hold at most 15 bytes) and addresses in 198.18.0.0/15,
        // the range set aside for benchmarking networks, so runs side by side do not meet.
        let id = uuid::Uuid::new_v4().as_u128();
        let tag = format!("{:08x}", id as u32);
        let name = format!("gh{tag}");
        let [_, _, b, c] = ((id >> 32) as u32).to_be_bytes();
        let base = [198, 18 + (b & 1), c, 0];
        if let Err(e) = run(&["ip", "netns", "add", &name]) {
            if e.contains("Operation not permitted") {
                return Err(Unavailable(e));
            }
            panic!("{e}");
        }
        let mut sandbox = Self {
            name: name.clone(),
            db: Link::placeholder(),
            api: Link::placeholder(),
        };
        // From here on, Drop deletes the namespace (and with it every veth pair in it).
        sandbox
            .exec(&["ip", "link", "set", "lo", "up"])
            .unwrap_or_else(|e| panic!("{e}"));
        sandbox.db = sandbox.link(&format!("d{tag}"), base);
        sandbox.api = sandbox.link(&format!("a{tag}"), [base[0], base[1], base[2], 4]);
        Ok(sandbox)
    }

    /// A veth pair `{prefix}h` (host) / `{prefix}n` (namespace) on the /30 at `net`.
    fn link(&self, prefix: &str, net: [u8; 4]) -> Link {
        let (host_if, ns_if) = (format!("{prefix}h"), format!("{prefix}n"));
        let host_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 1);
        let ns_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 2);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let wired = run(&["ip", "link", "set", &ns_if, "netns", &self.name])
            .and_then(|()| {
                run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("{host_ip}/30"),
                    "dev",
                    &host_if,
                ])
            })
            .and_then(|()| run(&["ip", "link", "set", &host_if, "up"]))
            .and_then(|()| self.exec(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]))
            .and_then(|()| self.exec(&["ip", "link", "set", &ns_if, "up"]));
        if let Err(e) = wired {
            // Deleting one end deletes the pair, wherever the other end is.
            let _ = run(&["ip", "link", "del", &host_if]);
            panic!("{e}");
        }
        Link {
            host_ip,
            ns_ip,
            ns_if,
        }
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
        run_with_input(
            &["ip", "netns", "exec", &self.name, "nft", "-f", "-"],
            Some(&rules),
        )
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
