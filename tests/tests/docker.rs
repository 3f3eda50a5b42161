//! The container path, for real: images built from docker/ by scripts/images
//! (no registry: the base is made locally), and docker/docker-compose.yml's
//! 3-signer network with its agent sidecars, stopped, started, taken down and
//! brought up again. Everything runs on the host network, on 127.0.0.1 ports
//! chosen here; every container and volume is removed when a test ends, also
//! on failure (a guard runs `docker-compose down -v`).
//!
//! Runs as root (as CI does): scripts/images installs and starts the Docker
//! engine if needed. As another user the tests say SKIPPED loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use anyhow::{bail, ensure, Context, Result};
use geth_agent::rpc::GethRpc;
use serde_json::Value;
use testnet::run_command as run;
use testnet::{eventually, free_port_range, free_ports, http_get, metric_value, workspace_root};

const MINUTE: Duration = Duration::from_secs(60);
/// The non-root user of every image (docker/*.Dockerfile).
const UID: &str = "10001";
/// Size targets of the two Rust runtime images.
const MAX_RUST_IMAGE_MB: u64 = 120;
const SIGNERS: usize = 3;

/// The three image names, once per test binary: every test needs them and the
/// build must not run twice at once.
fn images() -> Option<&'static [String]> {
    static IMAGES: OnceLock<Option<Vec<String>>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            // Root installs and starts the engine (scripts/images), hands the
            // network's files to the containers' user and reads the volumes.
            if !nix::unistd::geteuid().is_root() {
                eprintln!(
                    "\n*** SKIPPED: the container tests need root (to install and start \
                     dockerd, chown the network's keys to uid {UID}, read the volumes). \
                     They did NOT run. ***\n"
                );
                return None;
            }
            let started = Instant::now();
            let out = Command::new(workspace_root().join("scripts/images"))
                .output()
                .expect("run scripts/images");
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            println!("{table}scripts/images took {:?}", started.elapsed());
            assert!(out.status.success(), "scripts/images failed");
            let names: Vec<String> = table
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect();
            assert_eq!(names.len(), 3, "three images expected: {table}");
            Some(names)
        })
        .as_deref()
}

fn image(names: &[String], short: &str) -> String {
    names
        .iter()
        .find(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|t| t.starts_with(&format!("{short}:")))
        })
        .unwrap_or_else(|| panic!("no {short} image in {names:?}"))
        .clone()
}

fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args))
}

/// A network written by the release `geth-agent network new`, readable by the
/// containers' user.
struct Generated {
    dir: tempfile::TempDir,
    agent: u16,
}

impl Generated {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("docker-net-").tempdir()?;
        let (p2p, agent, http) = (
            free_port_range(SIGNERS as u16)?,
            free_port_range(SIGNERS as u16)?,
            free_port_range(SIGNERS as u16)?,
        );
        let release = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("release/geth-agent");
        let out = dir.path().join("network");
        run(Command::new(release)
            .args(["network", "new", "--signers", "3", "--validators", "0"])
            .args(["--period", "1", "--out"])
            .arg(&out)
            .args(["--p2p-port", &p2p.to_string()])
            .args(["--agent-port", &agent.to_string()])
            .args(["--http-port", &http.to_string()]))?;
        run(Command::new("chown")
            .args(["-R", &format!("{UID}:{UID}")])
            .arg(&out))?;
        Ok(Self { dir, agent })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("network")
    }

    fn agent_addr(&self, n: usize) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.agent + n as u16 - 1).into()
    }

    /// Every secret value `network new` wrote: passwords and private keys.
    fn secrets(&self) -> Result<Vec<String>> {
        let mut secrets = Vec::new();
        let net = self.path();
        for n in 1..=SIGNERS {
            let node = net.join(format!("nodes/signer-{n}"));
            secrets.push(std::fs::read_to_string(node.join("password"))?);
            secrets.push(std::fs::read_to_string(node.join("nodekey"))?);
        }
        secrets.push(std::fs::read_to_string(net.join("accounts/password"))?);
        secrets.push(std::fs::read_to_string(net.join("aggregator/key"))?);
        let secrets: Vec<String> = secrets.iter().map(|s| s.trim().to_owned()).collect();
        assert!(secrets.iter().all(|s| s.len() >= 16), "short secret");
        Ok(secrets)
    }
}

/// `docker-compose` on docker/docker-compose.yml under a project name of this
/// test alone; dropping it removes every container and volume of the project.
struct Compose {
    project: String,
    env: Vec<(String, String)>,
    /// Set by a test that got to its end: otherwise dropping prints the
    /// containers' last log lines, the evidence of what went wrong.
    passed: std::cell::Cell<bool>,
}

impl Compose {
    fn new(net: &Generated, aggregator_port: u16) -> Self {
        Self {
            project: format!("clique-docker-test-{}", std::process::id()),
            env: vec![
                ("NETWORK_DIR".into(), net.path().display().to_string()),
                ("AGGREGATOR_PORT".into(), aggregator_port.to_string()),
            ],
            passed: std::cell::Cell::new(false),
        }
    }

    fn passed(&self) {
        self.passed.set(true);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(workspace_root().join("docker/docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    fn container(&self, service: &str) -> Result<String> {
        let id = self.run(&["ps", "-q", service])?.trim().to_owned();
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id)
    }

    /// Containers of the project, running or not.
    fn containers(&self) -> Result<Vec<String>> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        Ok(docker(&["ps", "-a", "-q", "--filter", &filter])?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// The host folder of a named volume (this test runs as root to read it).
    fn volume(&self, name: &str) -> Result<PathBuf> {
        let volume = format!("{}_{name}", self.project);
        Ok(PathBuf::from(
            docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume])?.trim(),
        ))
    }

    fn datadir(&self, n: usize) -> Result<PathBuf> {
        self.volume(&format!("data-{n}"))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if !self.passed.get() {
            match self
                .command(&["logs", "--no-color", "--timestamps", "--tail", "150"])
                .output()
            {
                Ok(out) => eprintln!(
                    "---- the containers' last log lines ----\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("docker-compose logs: {e}"),
            }
        }
        let out = self
            .command(&["down", "-v", "--remove-orphans", "-t", "60"])
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!(
                "docker-compose down -v for {} failed: {out:?}",
                self.project
            );
        }
    }
}

async fn rpc(compose: &Compose, n: usize) -> Result<GethRpc> {
    Ok(GethRpc::connect(&compose.datadir(n)?.join("geth.ipc")).await?)
}

async fn block_hash(compose: &Compose, n: usize, number: u64) -> Result<String> {
    let block = rpc(compose, n)
        .await?
        .block(BlockNumberOrTag::Number(number))
        .await?;
    Ok(format!("{:#x}", block.header.hash))
}

/// Every signer at or past `number`, all holding the same block there.
async fn agree_on(compose: &Compose, number: u64) -> Result<Option<String>> {
    let mut hashes = Vec::new();
    for n in 1..=SIGNERS {
        if rpc(compose, n).await?.block_number().await? < number {
            return Ok(None);
        }
        hashes.push(block_hash(compose, n, number).await?);
    }
    ensure!(
        hashes.iter().all(|h| *h == hashes[0]),
        "signers disagree at block {number}: {hashes:?}"
    );
    Ok(Some(hashes.remove(0)))
}

async fn all_ready(net: &Generated) -> Result<Option<()>> {
    for n in 1..=SIGNERS {
        let (code, body) = http_get(net.agent_addr(n), "/readyz").await?;
        if code != 200 {
            // Polled again; the last answer is the error on timeout.
            bail!("signer-{n} /readyz {code}: {body}");
        }
    }
    Ok(Some(()))
}

fn marker(compose: &Compose, n: usize) -> Result<Option<Value>> {
    let path = compose.datadir(n)?.join("geth-agent/last-shutdown.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn assert_clean(verdict: &Value, what: &str) {
    assert_eq!(verdict["clean"], true, "{what}: {verdict}");
    assert!(
        verdict["persisted"]["number"].as_u64().is_some(),
        "{what}: no persisted block in {verdict}"
    );
}

async fn head(compose: &Compose, n: usize) -> Result<u64> {
    Ok(rpc(compose, n).await?.block_number().await?)
}

/// A block after `after` sealed by node `n`'s signer.
async fn sealed_by(compose: &Compose, n: usize, after: u64, signer: &str) -> Result<Option<u64>> {
    let rpc = rpc(compose, n).await?;
    let head = rpc.block_number().await?;
    for number in (after + 1..=head).rev() {
        let who: String = rpc
            .call("clique_getSigner", (format!("{number:#x}"),))
            .await?;
        if who.eq_ignore_ascii_case(signer) {
            return Ok(Some(number));
        }
    }
    Ok(None)
}

fn signer_address(net: &Generated, n: usize) -> Result<String> {
    let network: Value =
        serde_json::from_str(&std::fs::read_to_string(net.path().join("network.json"))?)?;
    network["nodes"][n - 1]["signer"]
        .as_str()
        .map(str::to_owned)
        .context("signer address in network.json")
}

/// geth's command line, as the kernel holds it (`docker inspect` gives the host pid).
fn geth_cmdline(compose: &Compose, n: usize) -> Result<Vec<String>> {
    let id = compose.container(&format!("geth-{n}"))?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &id])?;
    let raw = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

#[tokio::test]
async fn compose_network_seals_survives_stop_start_and_continues_after_down_up() -> Result<()> {
    if images().is_none() {
        return Ok(());
    }
    let net = Generated::new()?;
    let aggregator = free_ports(1)?[0];
    let compose = Compose::new(&net, aggregator);
    let started = Instant::now();
    compose.run(&["up", "-d"])?;

    let net_ref = &net;
    eventually("every agent's /readyz at 200", 5 * MINUTE, || {
        all_ready(net_ref)
    })
    .await?;
    let compose_ref = &compose;
    let hash10 = eventually("3 signers agreeing on block 10", 5 * MINUTE, || {
        agree_on(compose_ref, 10)
    })
    .await?;
    println!(
        "up: 3 signers agree on block 10 ({hash10}) after {:?}",
        started.elapsed()
    );
    let aggregator_addr = ([127, 0, 0, 1], aggregator).into();
    let names = eventually(
        "the aggregator listing 3 nodes",
        2 * MINUTE,
        || async move {
            let (code, body) = http_get(aggregator_addr, "/api/state").await?;
            ensure!(code == 200, "/api/state {code}: {body}");
            let state: Value = serde_json::from_str(&body)?;
            let online: Vec<String> = state["nodes"]
                .as_array()
                .context("nodes")?
                .iter()
                .filter(|n| n["online"] == true && n["head"]["number"].as_u64() > Some(0))
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect();
            Ok((online.len() == SIGNERS).then_some(online))
        },
    )
    .await?;
    println!("aggregator lists {names:?}");
    // The image's HEALTHCHECK (readiness over the admin socket) agrees.
    let agent1 = compose.container("agent-1")?;
    eventually("agent-1's container healthy", 2 * MINUTE, || {
        let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", &agent1]);
        async move { Ok((health?.trim() == "healthy").then_some(())) }
    })
    .await?;
    let (code, page) = http_get(aggregator_addr, "/").await?;
    assert_eq!(code, 200, "dashboard page");
    assert!(!page.is_empty());

    // One source for geth's command line: what runs is what the agent would run.
    let expected: Vec<String> = compose
        .run(&["exec", "-T", "agent-1", "geth-agent", "geth", "--print"])?
        .lines()
        .map(str::to_owned)
        .collect();
    let running = geth_cmdline(&compose, 1)?;
    assert_eq!(
        running, expected,
        "geth-1 runs another command line than the agent's"
    );
    for flag in ["--log.file", "--nodiscover", "--netrestrict", "--unlock"] {
        assert!(
            running.iter().any(|a| a == flag),
            "{flag} missing: {running:?}"
        );
    }

    // ...and both containers of a node read the same options.
    for n in 1..=SIGNERS {
        let options = |service: String| -> Result<Vec<String>> {
            let id = compose.container(&service)?;
            let env: Vec<String> =
                serde_json::from_str(&docker(&["inspect", "-f", "{{json .Config.Env}}", &id])?)?;
            let mut options: Vec<String> = env
                .into_iter()
                .filter(|e| e.starts_with("GETH_AGENT_"))
                .collect();
            options.sort();
            Ok(options)
        };
        let geth = options(format!("geth-{n}"))?;
        assert!(
            geth.iter().any(|e| e == "GETH_AGENT_MODE=attach"),
            "{geth:?}"
        );
        assert_eq!(
            geth,
            options(format!("agent-{n}"))?,
            "signer-{n}'s two containers"
        );
    }

    // Prometheus and Grafana only with the monitoring profile: 10 containers.
    assert_eq!(
        compose.containers()?.len(),
        1 + 3 * SIGNERS,
        "containers of the project"
    );

    // No secret in any container's environment.
    let secrets = net.secrets()?;
    for id in compose.containers()? {
        let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &id])?;
        for secret in &secrets {
            assert!(
                !env.contains(secret.as_str()),
                "a secret in {id}'s env: {env}"
            );
        }
        let user = docker(&["inspect", "-f", "{{.Config.User}}", &id])?;
        assert_eq!(user.trim(), format!("{UID}:{UID}"), "container {id} user");
    }

    // Docker stops geth-1 (one SIGTERM, like the kubelet): its agent proves it clean.
    assert!(marker(&compose, 1)?.is_none(), "a verdict before any stop");
    let before_stop = head(&compose, 1).await?;
    let stop_started = Instant::now();
    compose.run(&["stop", "geth-1"])?;
    println!(
        "docker-compose stop geth-1 took {:?}",
        stop_started.elapsed()
    );
    let verdict = eventually("agent-1's verdict on geth-1's stop", 2 * MINUTE, || async {
        marker(compose_ref, 1)
    })
    .await?;
    println!("agent-1's verdict: {verdict}");
    assert_clean(&verdict, "docker-compose stop geth-1");
    assert!(
        verdict["persisted"]["number"].as_u64() >= Some(before_stop.saturating_sub(128)),
        "{verdict}"
    );
    let status = compose.run(&[
        "exec",
        "-T",
        "agent-1",
        "geth-agent",
        "ctl",
        "--json",
        "status",
    ])?;
    let status: Value = serde_json::from_str(&status)?;
    assert_eq!(status["status"]["last_shutdown"]["clean"], true, "{status}");
    let (code, _) = http_get(net.agent_addr(1), "/readyz").await?;
    assert_eq!(code, 503, "agent-1 ready without geth");

    // Started again: the agent re-attaches, the node is ready and seals.
    let restarted_at = head(&compose, 2).await?;
    compose.run(&["start", "geth-1"])?;
    let addr1 = net.agent_addr(1);
    eventually("agent-1 ready again", 3 * MINUTE, || async move {
        Ok((http_get(addr1, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let (_, metrics) = http_get(addr1, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "clique_geth_up"),
        Some(1.0),
        "{metrics}"
    );
    let signer1 = signer_address(&net, 1)?;
    let sealed = eventually("signer-1 sealing after its restart", 3 * MINUTE, || {
        sealed_by(compose_ref, 1, restarted_at, &signer1)
    })
    .await?;
    println!("signer-1 sealed block {sealed} after its restart (others were at {restarted_at})");

    // down: nothing left running; geth stops before its agent, so each stop is proven.
    let head_before_down = head(&compose, 1).await?;
    let down_started = Instant::now();
    compose.run(&["down"])?;
    println!("docker-compose down took {:?}", down_started.elapsed());
    ensure!(
        compose.containers()?.is_empty(),
        "containers left after down: {:?}",
        compose.containers()?
    );
    for n in 1..=SIGNERS {
        let verdict = marker(&compose, n)?.context("no verdict after down")?;
        assert_clean(&verdict, &format!("down, signer-{n}"));
    }

    // A second up reuses the volumes: the same chain, continued from its head.
    compose.run(&["up", "-d"])?;
    eventually(
        "every agent's /readyz at 200 after the second up",
        5 * MINUTE,
        || all_ready(net_ref),
    )
    .await?;
    let target = head_before_down + 5;
    eventually(
        "the chain continuing after the second up",
        5 * MINUTE,
        || agree_on(compose_ref, target),
    )
    .await?;
    for n in 1..=SIGNERS {
        assert_eq!(
            block_hash(&compose, n, 10).await?,
            hash10,
            "signer-{n} lost the chain"
        );
    }
    println!(
        "second up: chain continued from {head_before_down} to {target}; whole test {:?}",
        started.elapsed()
    );
    compose.passed();
    Ok(())
}

#[tokio::test]
async fn images_run_as_non_root_hold_no_secrets_and_stay_small() -> Result<()> {
    let Some(images) = images() else {
        return Ok(());
    };
    for name in images {
        let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", name])?;
        assert_eq!(user.trim(), format!("{UID}:{UID}"), "{name}");
        let id = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "id",
            name,
        ])?;
        assert!(
            id.starts_with(&format!("uid={UID}(geth) gid={UID}(geth)")),
            "{name}: {id}"
        );
        let labels = docker(&["image", "inspect", "-f", "{{json .Config.Labels}}", name])?;
        assert!(
            labels.contains("org.opencontainers.image.revision"),
            "{name}: {labels}"
        );
    }
    for short in ["geth-agent", "geth-aggregator"] {
        let name = image(images, short);
        let bytes: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &name])?
            .trim()
            .parse()?;
        let mb = bytes / 1_000_000;
        println!("{name}: {mb} MB");
        assert!(mb <= MAX_RUST_IMAGE_MB, "{name} is {mb} MB");
    }

    // Keys and passwords come from mounted files: none in any layer or env.
    let net = Generated::new()?;
    let secrets = net.secrets()?;
    let needles = net.dir.path().join("secrets");
    std::fs::write(&needles, secrets.join("\n"))?;
    let saved = net.dir.path().join("image.tar");
    for name in images {
        let env = docker(&["image", "inspect", "-f", "{{json .Config.Env}}", name])?;
        assert!(
            secrets.iter().all(|s| !env.contains(s.as_str())),
            "{name}: {env}"
        );
        docker(&["save", "-o", &saved.display().to_string(), name])?;
        let found = grep_any(&needles, &saved)?;
        std::fs::remove_file(&saved)?;
        assert!(!found, "{name}: a generated secret in the saved image");
    }
    // The search itself works: a secret written into the tarball is found.
    std::fs::write(&saved, format!("xx{}yy", secrets[0]))?;
    assert!(grep_any(&needles, &saved)?, "grep finds nothing");
    Ok(())
}

/// Whether `file` holds any line of `needles` (grep -F: fixed strings, binary as text).
fn grep_any(needles: &Path, file: &Path) -> Result<bool> {
    let out = Command::new("grep")
        .args(["-a", "-q", "-F", "-f"])
        .arg(needles)
        .arg(file)
        .output()?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("grep failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test]
async fn the_monitoring_profile_is_a_valid_compose_configuration() -> Result<()> {
    if images().is_none() {
        return Ok(());
    }
    // Prometheus and Grafana are pulled from a registry: here they are only
    // validated, with every file they mount present.
    let compose = Compose {
        project: format!("clique-docker-config-{}", std::process::id()),
        env: vec![("NETWORK_DIR".into(), "/nonexistent-network".into())],
        // Nothing runs: no logs to show.
        passed: std::cell::Cell::new(true),
    };
    compose.run(&["--profile", "monitoring", "config", "-q"])?;
    let services = compose.run(&["--profile", "monitoring", "config", "--services"])?;
    for service in [
        "aggregator",
        "pod-1",
        "agent-1",
        "geth-1",
        "geth-3",
        "prometheus",
        "grafana",
    ] {
        assert!(
            services.lines().any(|s| s == service),
            "{service} missing: {services}"
        );
    }
    let root = workspace_root();
    for file in [
        "docker/prometheus/prometheus.yml",
        "docker/grafana/provisioning/datasources/prometheus.yml",
        "docker/grafana/provisioning/dashboards/clique.yml",
        "monitoring/alerts.yml",
        "monitoring/grafana-dashboard.json",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    // Prometheus's own check of the scrape config, with the rules where the
    // container mounts them (promtool: Debian's prometheus, scripts/install-deps).
    let promtool = testnet::system_tool("promtool", "PROMTOOL");
    let dir = tempfile::tempdir()?;
    let config = std::fs::read_to_string(root.join("docker/prometheus/prometheus.yml"))?;
    ensure!(config.contains("/etc/prometheus/alerts.yml"), "{config}");
    let rules = root.join("monitoring/alerts.yml").display().to_string();
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_file,
        config.replace("/etc/prometheus/alerts.yml", &rules),
    )?;
    let checked = run(Command::new(promtool)
        .arg("check")
        .arg("config")
        .arg(&config_file))?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    Ok(())
}
