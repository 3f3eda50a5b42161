//! Test harness: real geth v1.13.15 clique networks in temporary folders on free
//! loopback ports. Nodes are started directly or under `geth-agent`, waited on
//! with deadlines, and killed when the [`TestNetwork`] is dropped (also when a
//! test panics; the folder is then kept and its path printed for the logs).

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use anyhow::{bail, ensure, Context, Result};
use geth_agent::geth::{GethCommand, SignerArgs};
use geth_agent::network::{self, genesis, Network, NetworkSpec, NodeInfo, NodePorts};
use geth_agent::rpc::GethRpc;
use geth_agent::startup::{self, SealingStart, StartupPolicy};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The geth binary: `$GETH_BIN`, else the one `scripts/install-geth` builds.
pub fn geth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GETH_BIN") {
        return PathBuf::from(bin);
    }
    let bin = workspace_root().join(".tools/geth-1.13.15/bin/geth");
    assert!(
        bin.exists(),
        "geth not found at {}: run scripts/install-geth (or set GETH_BIN)",
        bin.display()
    );
    bin
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`
/// with the last observation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `cmd` to its end and returns its stdout; an error carries the command
/// and everything it printed when it fails.
pub fn run_command(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How nodes are started.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// geth directly; the harness applies the agent's startup policy itself.
    Geth,
    /// `geth-agent run` with the node's generated agent.toml.
    Agent(PathBuf),
}

/// What network to start.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub signers: usize,
    pub validators: usize,
    pub period: u64,
    pub launcher: Launcher,
    /// Extra `geth-agent run` arguments (agent launcher only).
    pub agent_args: Vec<String>,
    /// Extra geth arguments per node index (geth launcher only).
    pub geth_args: Vec<(usize, Vec<String>)>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            signers: 3,
            validators: 0,
            period: 1,
            launcher: Launcher::Geth,
            agent_args: Vec::new(),
            geth_args: Vec::new(),
        }
    }
}

pub struct TestNode {
    pub info: NodeInfo,
    pub datadir: PathBuf,
    /// stdout+stderr of geth (or of the agent).
    pub log: PathBuf,
    child: Option<Child>,
    /// Further processes of this node (e.g. an attach-mode agent beside geth).
    others: Vec<Child>,
}

impl TestNode {
    pub fn ipc(&self) -> PathBuf {
        self.datadir.join("geth.ipc")
    }

    /// The node's users' JSON-RPC over HTTP (validators only: signers serve none).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.info.ports.http)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A provider that signs with `wallet` and talks to this node: over HTTP
    /// on a validator, over IPC on a signer (which serves no HTTP).
    pub async fn wallet_provider(
        &self,
        wallet: alloy::network::EthereumWallet,
    ) -> Result<impl alloy::providers::Provider + Clone> {
        let builder = alloy::providers::ProviderBuilder::new().wallet(wallet);
        Ok(match self.info.signer {
            None => builder.connect_http(self.http_url().parse()?),
            Some(_) => {
                builder
                    .connect_ipc(alloy::transports::ipc::IpcConnect::new(self.ipc()))
                    .await?
            }
        })
    }

    pub async fn rpc(&self) -> Result<GethRpc> {
        Ok(GethRpc::connect(&self.ipc()).await?)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the node's process (geth or the agent).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().context("node is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Waits for the process to exit and returns its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let name = self.info.name.clone();
        let child = self.child.as_mut().context("node is not running")?;
        let status = eventually(&format!("{name} to exit"), timeout, || {
            let polled = child.try_wait().map_err(anyhow::Error::from);
            async move { polled }
        })
        .await?;
        self.child = None;
        Ok(status)
    }
}

pub struct TestNetwork {
    dir: Option<tempfile::TempDir>,
    pub network: Network,
    pub network_dir: PathBuf,
    pub nodes: Vec<TestNode>,
    pub launcher: Launcher,
    pub agent_args: Vec<String>,
    pub geth_args: Vec<(usize, Vec<String>)>,
}

impl TestNetwork {
    /// Generates a network and starts all its nodes.
    pub async fn start(options: NetworkOptions) -> Result<Self> {
        let mut net = Self::generate(&options)?;
        for i in 0..net.nodes.len() {
            net.spawn(i)?;
        }
        if matches!(net.launcher, Launcher::Geth) {
            net.apply_startup_policy().await?;
        }
        Ok(net)
    }

    /// Writes the network description without starting anything.
    pub fn generate(options: &NetworkOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("clique-").tempdir()?;
        let count = options.signers + options.validators;
        let ports = free_ports(count * 3)?
            .chunks(3)
            .map(|p| NodePorts {
                p2p: p[0],
                http: p[1],
                agent: p[2],
            })
            .collect();
        let template = serde_json::from_str(genesis::TEMPLATES[0].text)?;
        let spec = NetworkSpec {
            template,
            name: "test".into(),
            period: options.period,
            signers: options.signers,
            validators: options.validators,
            accounts: 1,
            host: "127.0.0.1".into(),
            ports,
            durability: None,
        };
        let network_dir = dir.path().join("network");
        let network = network::generate(&spec, &network_dir)?;
        let nodes = network
            .nodes
            .iter()
            .map(|info| TestNode {
                info: info.clone(),
                datadir: dir.path().join("data").join(&info.name),
                log: dir.path().join(format!("{}.log", info.name)),
                child: None,
                others: Vec::new(),
            })
            .collect();
        Ok(Self {
            dir: Some(dir),
            network,
            network_dir,
            nodes,
            launcher: options.launcher.clone(),
            agent_args: options.agent_args.clone(),
            geth_args: options.geth_args.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    pub fn genesis(&self) -> PathBuf {
        self.network_dir.join("genesis.json")
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        Network::node_dir(&self.network_dir, &self.nodes[i].info.name)
    }

    /// The geth command line the agent would build for node `i`.
    pub fn geth_command(&self, i: usize) -> GethCommand {
        let node = &self.nodes[i];
        let dir = self.node_dir(i);
        let mut cmd = GethCommand::new(geth_bin(), node.datadir.clone());
        cmd.network_id = std::fs::read_to_string(self.genesis())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .and_then(|g| genesis::chain_id(&g));
        cmd.config = Some(dir.join("config.toml"));
        cmd.nodekey = Some(dir.join("nodekey"));
        // As the agent: signers (unlocked accounts) serve JSON-RPC on IPC only.
        if node.info.signer.is_none() {
            cmd.http = Some(([127, 0, 0, 1], node.info.ports.http).into());
        }
        cmd.signer = node.info.signer.map(|address| SignerArgs {
            address,
            keystore: dir.join("keystore"),
            password_file: dir.join("password"),
        });
        for (_, args) in self.geth_args.iter().filter(|(n, _)| *n == i) {
            cmd.extra_args.extend(args.iter().cloned());
        }
        cmd
    }

    /// Starts node `i` (again) with the network's launcher.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let command = match self.launcher.clone() {
            Launcher::Geth => {
                let geth = self.geth_command(i);
                if geth_agent::init::needs_init(&geth.datadir) {
                    init_blocking(&geth, &self.genesis())?;
                }
                let mut c = Command::new(&geth.binary);
                c.args(geth.args());
                c
            }
            Launcher::Agent(bin) => self.agent_command(i, &bin, &[]),
        };
        let child = self.start_process(i, command)?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// `geth-aggregator` (binary `bin`) for this network, listening on `addr`
    /// with its database at `db`.
    pub fn aggregator_command(&self, bin: &Path, addr: std::net::SocketAddr, db: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("--listen")
            .arg(addr.to_string())
            .arg("--network")
            .arg(self.network_dir.join(Network::FILE))
            .arg("--db")
            .arg(db)
            .env("RUST_LOG", "info");
        c
    }

    /// Starts `geth-aggregator` (binary `bin`, on `addr`, its database and
    /// the admin token `token` in this network's folder), then every node.
    /// Returns the token file.
    pub fn start_with_admin_aggregator(
        &mut self,
        bin: &Path,
        addr: std::net::SocketAddr,
        token: &str,
    ) -> Result<PathBuf> {
        let token_file = self.path().join("admin-token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        let mut aggregator = self.aggregator_command(bin, addr, &self.path().join("aggregator.db"));
        aggregator.arg("--admin-token-file").arg(&token_file);
        self.spawn_other(0, aggregator)?;
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        Ok(token_file)
    }

    /// `geth-agent run` for node `i` with its generated agent.toml.
    pub fn agent_command(&self, i: usize, bin: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.arg("run")
            .arg("--config")
            .arg(self.node_dir(i).join("agent.toml"))
            .arg("--datadir")
            .arg(&self.nodes[i].datadir)
            .args(&self.agent_args)
            .args(extra)
            .env("GETH_BIN", geth_bin())
            .env("RUST_LOG", "info");
        c
    }

    /// Starts a further process belonging to node `i` (killed with the network).
    pub fn spawn_other(&mut self, i: usize, command: Command) -> Result<u32> {
        let child = self.start_process(i, command)?;
        let pid = child.id();
        self.nodes[i].others.push(child);
        Ok(pid)
    }

    fn start_process(&self, i: usize, mut command: Command) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command
            .spawn()
            .with_context(|| format!("starting a process of {}", self.nodes[i].info.name))
    }

    /// What the agent does after geth starts: gas price floor, then sealing.
    pub async fn apply_startup_policy(&self) -> Result<()> {
        let signers = self.network.signers().count();
        let mut tasks = Vec::new();
        for node in &self.nodes {
            let ipc = node.ipc();
            let policy = StartupPolicy {
                min_gas_price_wei: 0,
                sealing: node.info.signer.map(|signer| SealingStart {
                    signer,
                    min_peers: signers - 1,
                    max_wait: Duration::from_secs(30),
                    recovery_hold: None,
                }),
            };
            tasks.push(tokio::spawn(async move {
                let rpc =
                    GethRpc::connect_by(&ipc, Instant::now() + Duration::from_secs(60)).await?;
                startup::apply(&rpc, &policy, &CancellationToken::new()).await?;
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// Head of node `i`, over IPC.
    pub async fn head(&self, i: usize) -> Result<u64> {
        Ok(self.nodes[i].rpc().await?.block_number().await?)
    }

    /// Waits until node `i` has at least block `number`; on timeout the error
    /// carries the end of the node's log.
    pub async fn wait_for_block(&self, i: usize, number: u64, timeout: Duration) -> Result<u64> {
        let what = format!("{} to reach block {number}", self.nodes[i].info.name);
        eventually(&what, timeout, || async move {
            let head = self.head(i).await?;
            Ok((head >= number).then_some(head))
        })
        .await
        .map_err(|e| {
            let log = self.nodes[i].log_text();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!(
                "last lines of {}:\n{}",
                self.nodes[i].log.display(),
                tail.join("\n")
            ))
        })
    }

    /// Hash of block `number` on node `i`.
    pub async fn block_hash(&self, i: usize, number: u64) -> Result<B256> {
        use alloy::providers::Provider;
        let rpc = self.nodes[i].rpc().await?;
        let block = rpc
            .provider()
            .get_block_by_number(number.into())
            .await?
            .with_context(|| format!("block {number} missing"))?;
        Ok(block.header.hash)
    }

    /// The real clique sealer of block `number`, as node `i` sees it.
    pub async fn signer_of(&self, i: usize, number: u64) -> Result<Address> {
        let rpc = self.nodes[i].rpc().await?;
        Ok(rpc
            .call("clique_getSigner", (format!("{number:#x}"),))
            .await?)
    }

    /// Keeps the folder (logs, datadirs) after the test.
    pub fn keep(&mut self) -> PathBuf {
        self.dir
            .take()
            .map(tempfile::TempDir::keep)
            .unwrap_or_default()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            for mut child in node.child.take().into_iter().chain(node.others.drain(..)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            // A geth started by a killed agent lives on in its own process group.
            let target = geth_agent::process::AttachTarget {
                datadir: node.datadir.clone(),
                log_file: PathBuf::new(),
                pid_file: None,
                binary: Some(geth_bin()),
            };
            while let Some(pid) = geth_agent::process::find_geth(&target) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let gone = (0..100).any(|_| {
                    std::thread::yield_now();
                    geth_agent::process::find_geth(&target) != Some(pid)
                });
                if !gone {
                    break;
                }
            }
        }
        if std::thread::panicking() || std::env::var_os("KEEP_TEST_NETWORKS").is_some() {
            let kept = self.keep();
            eprintln!("test network kept for inspection: {}", kept.display());
        }
    }
}

fn init_blocking(geth: &GethCommand, genesis: &Path) -> Result<()> {
    let output = Command::new(&geth.binary)
        .args(geth.init_args(genesis))
        .output()?;
    if !output.status.success() {
        bail!(
            "geth init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Where ports for child processes come from: below the kernel's ephemeral
/// range (32768 and up), so an outgoing connection cannot take a chosen port
/// as its source port before the child binds it (geth then cannot start).
const CHILD_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// The next candidate in [`CHILD_PORTS`]: each process walks the range from
/// its own offset, so it never offers a port twice and parallel test
/// processes rarely meet.
fn next_child_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static OFFSET: OnceLock<u32> = OnceLock::new();
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(CHILD_PORTS.end - CHILD_PORTS.start);
    let offset = *OFFSET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (std::process::id().wrapping_mul(7919) ^ nanos) % span
    });
    loop {
        let at = (offset + TAKEN.fetch_add(u32::from(count), Ordering::Relaxed)) % span;
        // A block of consecutive ports must not wrap around the range's end.
        if at + u32::from(count) <= span {
            return CHILD_PORTS.start + at as u16;
        }
    }
}

/// Distinct free loopback ports for child processes (all held open until
/// every one is chosen).
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count + 1000 {
        if held.len() == count {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", next_child_ports(1))) {
            held.push(listener);
        }
    }
    ensure!(
        held.len() == count,
        "no {count} free loopback ports in {CHILD_PORTS:?}"
    );
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// A free loopback port `base` such that `base..base + count` are all free (for
/// tools that number nodes' ports consecutively).
pub fn free_port_range(count: u16) -> Result<u16> {
    ensure!((1..1000).contains(&count), "a range of 1 to 999 ports");
    for _ in 0..200 {
        let base = next_child_ports(count);
        let held: Result<Vec<TcpListener>, _> = (base..base + count)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.is_ok() {
            return Ok(base);
        }
    }
    bail!("no range of {count} free loopback ports found in {CHILD_PORTS:?}")
}

/// `GET http://addr/path` → (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<hyper::body::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// `POST http://addr/` with a JSON body → (status, body), e.g. a JSON-RPC call.
pub async fn http_post_json(addr: std::net::SocketAddr, json: &str) -> Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::post("/")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(json.to_owned())))?;
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The agent's status over its admin socket.
pub async fn agent_status(socket: &Path) -> Result<serde_json::Value> {
    let (code, body) =
        geth_agent::ctl::request(socket, hyper::Method::GET, "/status", None).await?;
    ensure!(code.is_success(), "status {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// A tool from the system (Debian packages), overridable by an env var.
pub fn system_tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} not found on the PATH: run scripts/install-deps (or set {env})")
    })
}

/// Percent-encodes a query parameter value.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of one sample in Prometheus text, e.g.
/// `metric_value(text, "clique_head_block")` or with labels
/// `metric_value(text, "clique_peers{direction=\"inbound\"}")`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A binary built by cargo next to the running test (e.g. `geth-agent` for
/// another package's tests).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn child_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(50).unwrap();
        let unique: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), 50);
        assert!(ports.iter().all(|p| CHILD_PORTS.contains(p)), "{ports:?}");
        for p in &ports {
            TcpListener::bind(("127.0.0.1", *p)).unwrap();
        }
        let base = free_port_range(7).unwrap();
        assert!(CHILD_PORTS.contains(&base) && CHILD_PORTS.contains(&(base + 6)));
        assert!((base..base + 7).all(|p| !unique.contains(&p)));
    }
}
