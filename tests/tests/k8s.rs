//! The Kubernetes deployment (k8s/) on a real 3-node cluster built from
//! upstream Kubernetes by scripts/k8s-local: real kubelets, real containerd,
//! real geth in real pods. One test, in phases, each timed:
//! cluster up, every overlay rendered and checked as typed objects, the
//! restricted Pod Security dry-run, the testnetsidechain network deployed
//! (through overlays/local: 3 signers and a validator behind Service geth),
//! pod deletion, the agent sidecar killed alone, geth SIGKILLed, cluster down.
//!
//! Needs root (network namespaces, mounts, containerd): as another user it
//! FAILS with a message rather than pass without running. Every address used
//! is inside the network namespaces the script creates (10.250.0.0/24).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use geth_agent::network::{self, genesis, NetworkSpec, NodePorts};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use testnet::run_command as run;
use testnet::{eventually, workspace_root};

const MINUTE: Duration = Duration::from_secs(60);
const NS: &str = "testnetsidechain";
/// The test network's identities, and where each runs: signer-i on kn<i>, and
/// validator-1 beside signer-3 on kn3 (overlays/local gives it other ports).
const IDENTITIES: [&str; 4] = ["signer-1", "signer-2", "signer-3", "validator-1"];
const RUNS_ON: [&str; 4] = ["kn1", "kn2", "kn3", "kn3"];
const SIGNER_PODS: &str = "app.kubernetes.io/name=geth,app.kubernetes.io/component=signer";
const VALIDATOR_PODS: &str = "app.kubernetes.io/name=geth,app.kubernetes.io/component=validator";
const PERIOD: u64 = 2;
const UID: i64 = 10001;
/// Where components/host-network keeps each node's datadirs on this machine.
const HOST_DATADIRS: [&str; 2] = ["/var/lib/geth-clique", "/var/lib/geth-clique-validator"];

fn node_ip(node: &str) -> String {
    format!("10.250.0.1{}", node.trim_start_matches("kn"))
}

/// The cluster of scripts/k8s-local; `down` when dropped, also on failure.
struct Cluster {
    script: PathBuf,
    kubectl: PathBuf,
    state: PathBuf,
}

impl Cluster {
    fn up() -> Result<Self> {
        let script = workspace_root().join("scripts/k8s-local");
        let out = Command::new(&script)
            .arg("up")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("run scripts/k8s-local up")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        let cluster = Self {
            state: kubeconfig
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            kubectl: kubeconfig.with_file_name("kubectl"),
            script,
        };
        ensure!(out.status.success(), "scripts/k8s-local up failed");
        ensure!(
            cluster.kubectl.exists(),
            "no kubectl wrapper at {:?}",
            cluster.kubectl
        );
        Ok(cluster)
    }

    fn kubectl(&self) -> Command {
        Command::new(&self.kubectl)
    }

    fn k(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl().args(args))
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.k(&all)?)?)
    }

    /// GET through the API server's proxy (the API server reaches the nodes'
    /// addresses inside the cluster's namespaces; this host does not).
    fn proxy(&self, path: &str) -> Result<String> {
        self.k(&["get", "--raw", path])
    }

    fn aggregator(&self, path: &str) -> Result<Value> {
        let text = self.proxy(&format!(
            "/api/v1/namespaces/{NS}/services/geth-aggregator:http/proxy{path}"
        ))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The signer pods (DaemonSet geth).
    fn geth_pods(&self) -> Result<Vec<Value>> {
        self.pods(SIGNER_PODS)
    }

    fn pods(&self, selector: &str) -> Result<Vec<Value>> {
        let list = self.json(&["get", "pods", "-n", NS, "-l", selector])?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// A JSON-RPC call through Service geth, by the API server's proxy. curl
    /// in the control plane's namespace, as `kubectl create --raw` cannot set
    /// the content type geth requires.
    fn service_rpc(&self, method: &str) -> Result<Value> {
        let config: Value = serde_yaml::from_str(&std::fs::read_to_string(
            self.kubectl.with_file_name("kubeconfig"),
        )?)?;
        let cluster = &config["clusters"][0]["cluster"];
        let (server, ca) = (
            cluster["server"].as_str().context("server")?,
            cluster["certificate-authority"].as_str().context("CA")?,
        );
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .context("token")?;
        let headers = tempfile::NamedTempFile::new()?;
        std::fs::write(
            headers.path(),
            format!("Authorization: Bearer {token}\nContent-Type: application/json\n"),
        )?;
        let text = run(Command::new("nsenter")
            .arg("--net=/var/run/netns/kc")
            .args(["curl", "-sS", "--fail-with-body", "--max-time", "20"])
            .arg("--cacert")
            .arg(ca)
            .arg("-H")
            .arg(format!("@{}", headers.path().display()))
            .arg("--data")
            .arg(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#
            ))
            .arg(format!(
                "{server}/api/v1/namespaces/{NS}/services/geth:rpc/proxy/"
            )))?;
        let reply: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} through Service geth: {text}"))?;
        reply
            .get("result")
            .cloned()
            .with_context(|| format!("{method} through Service geth: {reply}"))
    }

    fn pod_on(&self, node: &str) -> Result<Option<Value>> {
        Ok(self.geth_pods()?.into_iter().find(|p| {
            p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null()
        }))
    }

    /// geth's console on the pod's IPC socket (geth's own container).
    fn geth_exec(&self, pod: &str, js: &str) -> Result<String> {
        let out = self.k(&[
            "exec",
            "-n",
            NS,
            pod,
            "-c",
            "geth",
            "--",
            "geth",
            "attach",
            "--exec",
            js,
            "/data/geth.ipc",
        ])?;
        Ok(out.trim().trim_matches('"').to_owned())
    }

    fn identity(&self, pod: &str) -> Result<String> {
        let link = self.k(&[
            "exec",
            "-n",
            NS,
            pod,
            "-c",
            "agent",
            "--",
            "readlink",
            "/data/identity",
        ])?;
        Ok(link
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    /// SIGKILL to one container's process, as the node's containerd sees it.
    fn kill_container(&self, node: &str, container_id: &str) -> Result<()> {
        let id = container_id.trim_start_matches("containerd://");
        let sock = self.state.join("nodes").join(node).join("containerd.sock");
        run(Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "tasks", "kill", "-s", "KILL", id]))?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let started = Instant::now();
        let status = Command::new(&self.script)
            .arg("down")
            .stdin(Stdio::null())
            .status();
        for dir in HOST_DATADIRS {
            let _ = std::fs::remove_dir_all(dir);
        }
        report(format_args!(
            "phase cluster down: {:?} ({status:?})",
            started.elapsed()
        ));
    }
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// 2/2: geth and the agent sidecar both running and ready, pod Ready.
fn two_of_two(pod: &Value) -> bool {
    let running = |n: &str| {
        container_status(pod, n)
            .is_some_and(|c| c["ready"] == true && c["state"]["running"].is_object())
    };
    pod_ready(pod) && running("geth") && running("agent")
}

/// A time the API server or a kubelet recorded (RFC 3339, whole seconds for
/// container starts and conditions).
fn time(v: &Value, what: &str) -> Result<Timestamp> {
    v.as_str()
        .with_context(|| format!("no {what}"))?
        .parse()
        .map_err(|e| anyhow!("{what}: {v}: {e}"))
}

/// When the container's current run started, as its kubelet recorded it.
fn started_at(pod: &Value, container: &str) -> Result<Timestamp> {
    let status = container_status(pod, container).with_context(|| format!("no {container}"))?;
    time(
        &status["state"]["running"]["startedAt"],
        &format!("{container}'s start"),
    )
}

/// When the pod last turned Ready (or not Ready), as its kubelet recorded it.
fn ready_since(pod: &Value) -> Result<Timestamp> {
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .context("no Ready condition")?;
    time(&ready["lastTransitionTime"], "Ready's transition")
}

impl Cluster {
    /// The aggregator's log lines "shutdown verdict received" for `who`, with
    /// the time the container runtime recorded each line.
    fn verdicts_received(&self, who: &str) -> Result<Vec<Timestamp>> {
        let log = self.k(&["logs", "-n", NS, "deploy/geth-aggregator", "--timestamps"])?;
        let node = format!("node={who} ");
        log.lines()
            .filter(|l| l.contains("shutdown verdict received") && l.contains(&node))
            .map(|l| {
                let stamp = l.split_whitespace().next().unwrap_or_default();
                stamp.parse().map_err(|e| anyhow!("log time of {l:?}: {e}"))
            })
            .collect()
    }
}

fn restarts(pod: &Value, container: &str) -> u64 {
    container_status(pod, container)
        .and_then(|c| c["restartCount"].as_u64())
        .unwrap_or(0)
}

fn container_id(pod: &Value, container: &str) -> String {
    container_status(pod, container)
        .and_then(|c| c["containerID"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---- rendering ---------------------------------------------------------------

/// The overlay rendered by kubectl's kustomize, one JSON value per object.
fn render(kubectl: &Path, dir: &Path) -> Result<Vec<Value>> {
    let yaml = run(Command::new(kubectl).arg("kustomize").arg(dir))?;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn typed<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str, name: &str) -> Result<T> {
    let v = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))?;
    serde_json::from_value(v.clone()).with_context(|| format!("{kind} {name} does not parse"))
}

fn check_restricted(c: &Container, what: &str) -> Result<()> {
    let sc = c
        .security_context
        .as_ref()
        .with_context(|| format!("{what}: no securityContext"))?;
    ensure!(
        sc.allow_privilege_escalation == Some(false),
        "{what}: allowPrivilegeEscalation"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    ensure!(caps == ["ALL"], "{what}: capabilities must drop ALL");
    ensure!(
        sc.run_as_user.is_none() || sc.run_as_user == Some(UID),
        "{what}: other uid"
    );
    let res = c
        .resources
        .as_ref()
        .with_context(|| format!("{what}: no resources"))?;
    ensure!(
        res.requests.as_ref().is_some_and(|r| r.contains_key("cpu")),
        "{what}: cpu request"
    );
    ensure!(
        res.limits
            .as_ref()
            .is_some_and(|r| r.contains_key("memory")),
        "{what}: memory limit"
    );
    Ok(())
}

/// The invariants of docs/KUBERNETES.md, on typed objects.
fn check_overlay(objects: &[Value], host_network: bool) -> Result<()> {
    ensure!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "a Secret is rendered: keys must be referenced, never inline"
    );
    let env: ConfigMap = typed(objects, "ConfigMap", "geth-env")?;
    let env = env.data.unwrap_or_default();
    let grace: i64 = env
        .get("GETH_AGENT_SHUTDOWN_GRACE_SECS")
        .context("no shutdown grace")?
        .parse()?;
    ensure!(
        env.get("GETH_AGENT_GETH_LOG_FILE")
            .is_some_and(|f| f.starts_with("/var/log/geth/")),
        "geth's JSON log on the shared volume"
    );
    ensure!(
        !env.contains_key("GETH_AGENT_HTTP"),
        "signers serve no JSON-RPC"
    );
    let validator_env: ConfigMap = typed(objects, "ConfigMap", "geth-validator-env")?;
    ensure!(
        validator_env
            .data
            .unwrap_or_default()
            .get("GETH_AGENT_HTTP")
            .is_some_and(|a| a.starts_with("0.0.0.0:")),
        "validators serve JSON-RPC on the pod's address"
    );
    let signers = check_geth_daemonset(objects, "geth", &["geth-env"], grace, host_network)
        .context("DaemonSet geth")?;
    let validators = check_geth_daemonset(
        objects,
        "geth-validator",
        &["geth-env", "geth-validator-env"],
        grace,
        host_network,
    )
    .context("DaemonSet geth-validator")?;
    let rpc: Service = typed(objects, "Service", "geth")?;
    let rpc = rpc.spec.context("Service geth spec")?;
    ensure!(
        rpc.publish_not_ready_addresses != Some(true),
        "geth Service: ready pods only"
    );
    let selector = rpc.selector.unwrap_or_default();
    let selects = |labels: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    ensure!(
        selects(&validators) && !selects(&signers),
        "Service geth must select the validator pods, and no signer pod"
    );
    ensure!(rpc.ports.iter().flatten().any(|p| p.port == 8545), "8545");
    let p2p: Service = typed(objects, "Service", "geth-p2p")?;
    ensure!(
        p2p.spec.and_then(|s| s.cluster_ip).as_deref() == Some("None"),
        "headless p2p"
    );
    let agg: Deployment = typed(objects, "Deployment", "geth-aggregator")?;
    let agg = agg.spec.context("aggregator spec")?;
    ensure!(
        agg.strategy.and_then(|s| s.type_).as_deref() == Some("Recreate"),
        "one SQLite writer: Recreate"
    );
    let agg_pod = agg.template.spec.context("aggregator pod")?;
    for c in &agg_pod.containers {
        check_restricted(c, "aggregator")?;
    }
    let db = agg_pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "db")
        .context("db volume")?;
    if !host_network {
        let claim = db
            .persistent_volume_claim
            .as_ref()
            .context("aggregator db on a PVC")?;
        ensure!(
            objects.iter().any(|o| o["kind"] == "PersistentVolumeClaim"
                && o["metadata"]["name"] == claim.claim_name.as_str()),
            "the aggregator's PVC is part of the overlay"
        );
    }
    Ok(())
}

/// The geth pod's invariants in DaemonSet `name`, whose containers take their
/// environment from `env` (in order); its pod labels.
fn check_geth_daemonset(
    objects: &[Value],
    name: &str,
    env: &[&str],
    grace: i64,
    host_network: bool,
) -> Result<BTreeMap<String, String>> {
    let ds: DaemonSet = typed(objects, "DaemonSet", name)?;
    let template = ds.spec.context("DaemonSet spec")?.template;
    let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    let pod: PodSpec = template.spec.context("pod spec")?;
    ensure!(
        pod.share_process_namespace == Some(true),
        "shareProcessNamespace"
    );
    ensure!(
        pod.termination_grace_period_seconds
            .is_some_and(|t| t > grace),
        "terminationGracePeriodSeconds must exceed the agent's grace {grace}"
    );
    ensure!(
        pod.host_network.unwrap_or(false) == host_network,
        "hostNetwork"
    );
    let psc = pod
        .security_context
        .as_ref()
        .context("pod securityContext")?;
    ensure!(
        psc.run_as_non_root == Some(true) && psc.run_as_user == Some(UID),
        "pod uid"
    );
    ensure!(
        psc.seccomp_profile
            .as_ref()
            .is_some_and(|s| s.type_ == "RuntimeDefault"),
        "seccomp RuntimeDefault"
    );
    let inits = pod.init_containers.clone().unwrap_or_default();
    let agent_at = inits
        .iter()
        .position(|c| c.name == "agent")
        .context("no agent sidecar")?;
    let claim_at = inits
        .iter()
        .position(|c| c.name == "claim")
        .context("no claim")?;
    ensure!(
        claim_at < agent_at,
        "the claim must run before the agent starts"
    );
    let agent = &inits[agent_at];
    ensure!(
        agent.restart_policy.as_deref() == Some("Always"),
        "the agent must be a native sidecar (restartPolicy: Always)"
    );
    ensure!(
        agent
            .liveness_probe
            .as_ref()
            .is_some_and(|p| p.failure_threshold.unwrap_or(3) >= 3),
        "the agent's liveness probe must be loose"
    );
    let geth = pod
        .containers
        .iter()
        .find(|c| c.name == "geth")
        .context("no geth container")?;
    ensure!(pod.containers.len() == 1, "one main container");
    let probe = geth
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    let agent_port = agent
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("agent"))
        .context("the agent's port")?
        .container_port;
    ensure!(
        probe.is_some_and(|g| g.path.as_deref() == Some("/readyz")
            && g.port
                == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(agent_port)),
        "geth's readiness must be the agent's /readyz"
    );
    ensure!(
        geth.command.as_deref() == Some(&["geth-agent".to_owned(), "geth".to_owned()][..]),
        "geth must start through `geth-agent geth`"
    );
    // Both containers from one environment.
    let env_of = |c: &Container| {
        c.env_from
            .iter()
            .flatten()
            .filter_map(|e| e.config_map_ref.as_ref().map(|r| r.name.clone()))
            .collect::<Vec<_>>()
    };
    ensure!(env_of(geth) == env && env_of(agent) == env, "same env");
    for c in inits
        .iter()
        .filter(|c| c.name != "datadir-owner")
        .chain(&pod.containers)
    {
        check_restricted(c, &c.name)?;
    }
    // The datadir on the node's disk, one folder per node, in the host variant.
    let data = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .context("data volume")?;
    ensure!(
        data.host_path.is_some() == host_network,
        "datadir on the node's disk"
    );
    if host_network {
        for c in inits
            .iter()
            .filter(|c| c.name != "datadir-owner")
            .chain(&pod.containers)
        {
            let m = c.volume_mounts.iter().flatten().find(|m| m.name == "data");
            ensure!(
                m.is_some_and(|m| m.sub_path_expr.as_deref() == Some("$(NODE_NAME)")),
                "{}: datadir per node",
                c.name
            );
        }
    }
    Ok(labels)
}

/// components/monitoring carries monitoring/ unchanged; components/ingress has TLS.
fn check_components(kubectl: &Path) -> Result<()> {
    let root = workspace_root();
    // kustomize takes only relative paths: a folder two levels under the root.
    let scratch = root.join("target");
    std::fs::create_dir_all(&scratch)?;
    let dir = tempfile::Builder::new()
        .prefix("k8s-components-")
        .tempdir_in(&scratch)?;
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [../../k8s/overlays/testnetsidechain]\n\
         components: [../../k8s/components/monitoring, ../../k8s/components/ingress]\n",
    )?;
    let objects = render(kubectl, dir.path())?;
    let rule = objects
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("no PrometheusRule")?;
    let alerts: Value = serde_yaml::from_str(&std::fs::read_to_string(
        root.join("monitoring/alerts.yml"),
    )?)?;
    ensure!(
        rule["spec"]["groups"] == alerts["groups"],
        "PrometheusRule != monitoring/alerts.yml"
    );
    let dash: ConfigMap = typed(&objects, "ConfigMap", "geth-clique-dashboard")?;
    let text = dash
        .data
        .unwrap_or_default()
        .remove("geth-clique.json")
        .context("dashboard")?;
    let ours: Value = serde_json::from_str(&text)?;
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("monitoring/grafana-dashboard.json"),
    )?)?;
    ensure!(
        ours == theirs,
        "dashboard ConfigMap != monitoring/grafana-dashboard.json"
    );
    ensure!(
        objects
            .iter()
            .filter(|o| o["kind"] == "ServiceMonitor")
            .count()
            == 2,
        "ServiceMonitors for the agents and the aggregator"
    );
    let ingress: Ingress = typed(&objects, "Ingress", "geth")?;
    let spec = ingress.spec.context("ingress spec")?;
    ensure!(
        !spec.tls.unwrap_or_default().is_empty(),
        "Ingress without TLS"
    );
    Ok(())
}

// ---- the network ---------------------------------------------------------------

/// A testnetsidechain of 3 signers and 1 validator laid out as [`RUNS_ON`]:
/// enodes at the nodes' addresses, geth listening on them.
fn generate_network(dir: &Path) -> Result<()> {
    let template = serde_json::from_str(
        genesis::template("testnetsidechain")
            .context("testnetsidechain template")?
            .text,
    )?;
    let ports: Vec<NodePorts> = (0..4u16)
        .map(|i| NodePorts {
            p2p: 30303 + i,
            http: 8545 + i,
            agent: 9101 + i,
        })
        .collect();
    let spec = NetworkSpec {
        template,
        name: NS.into(),
        period: PERIOD,
        signers: 3,
        validators: 1,
        accounts: 1,
        host: "HOST".into(),
        ports: ports.clone(),
        durability: None,
    };
    network::generate(&spec, dir)?;
    let fix = |text: String| {
        let mut text = text.replace("ListenAddr = \"127.0.0.1:", "ListenAddr = \"0.0.0.0:");
        for (i, node) in RUNS_ON.iter().enumerate() {
            text = text.replace(
                &format!("@HOST:{}", ports[i].p2p),
                &format!("@{}:{}", node_ip(node), ports[i].p2p),
            );
        }
        text
    };
    for node in IDENTITIES {
        let f = dir.join(format!("nodes/{node}/config.toml"));
        std::fs::write(&f, fix(std::fs::read_to_string(&f)?))?;
    }
    let f = dir.join("network.json");
    std::fs::write(&f, fix(std::fs::read_to_string(&f)?))?;
    Ok(())
}

/// ConfigMap geth-network and Secret geth-keys as docs/KUBERNETES.md creates them.
fn load_network(cluster: &Cluster, dir: &Path) -> Result<()> {
    let p = |rel: &str| dir.join(rel).display().to_string();
    let mut cm = vec![
        format!("--from-file=genesis.json={}", p("genesis.json")),
        format!("--from-file=network.json={}", p("network.json")),
    ];
    let token = dir.join("admin-token");
    std::fs::write(&token, "k8s-test-admin-token")?;
    let mut secret = vec![
        format!("--from-file=aggregator.key={}", p("aggregator/key")),
        format!("--from-file=admin-token={}", token.display()),
    ];
    // Every identity's config and node key; a signer's keystore and password too.
    for identity in IDENTITIES {
        let node = format!("nodes/{identity}");
        for file in ["agent.toml", "config.toml"] {
            cm.push(format!(
                "--from-file={identity}.{file}={}",
                p(&format!("{node}/{file}"))
            ));
        }
        secret.push(format!(
            "--from-file={identity}.nodekey={}",
            p(&format!("{node}/nodekey"))
        ));
        if identity.starts_with("signer-") {
            let keystore = std::fs::read_dir(dir.join(&node).join("keystore"))?
                .next()
                .context("no keystore file")??
                .path();
            secret.push(format!(
                "--from-file={identity}.keystore={}",
                keystore.display()
            ));
            secret.push(format!(
                "--from-file={identity}.password={}",
                p(&format!("{node}/password"))
            ));
        }
    }
    let mut args = vec!["create", "configmap", "geth-network", "-n", NS];
    args.extend(cm.iter().map(String::as_str));
    cluster.k(&args)?;
    let mut args = vec!["create", "secret", "generic", "geth-keys", "-n", NS];
    args.extend(secret.iter().map(String::as_str));
    cluster.k(&args)?;
    Ok(())
}

fn signer_addresses(dir: &Path) -> Result<BTreeMap<String, String>> {
    let net: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("network.json"))?)?;
    Ok(net["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["name"].as_str()?.to_owned(),
                n["signer"].as_str()?.to_lowercase(),
            ))
        })
        .collect())
}

/// Signers of the blocks after `from` as geth on `pod` recovers them.
fn sealers_since(cluster: &Cluster, pod: &str, from: u64) -> Result<BTreeSet<String>> {
    let js = format!(
        "var s = {{}}; for (var i = {from} + 1; i <= eth.blockNumber; i++) {{ s[clique.getSigner(eth.getBlock(i).hash).toLowerCase()] = 1 }}; Object.keys(s).join(',')"
    );
    Ok(cluster
        .geth_exec(pod, &js)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

fn head(cluster: &Cluster, pod: &str) -> Result<u64> {
    Ok(cluster.geth_exec(pod, "eth.blockNumber")?.parse()?)
}

/// What the aggregator stored of `who`'s lifecycle events recorded at or
/// after `since_ms`, oldest first: `{"kind": "shutdown", "verdict": …}`,
/// `{"kind": "recovered", "blocks_lost": …}`, …
fn events_since(cluster: &Cluster, who: &str, since_ms: u64) -> Result<Vec<Value>> {
    let events = cluster.aggregator("/api/events")?;
    let mut mine: Vec<(u64, Value)> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == who)
        .map(|e| {
            (
                e["event"]["at_ms"].as_u64().unwrap_or(0),
                e["event"]["kind"].clone(),
            )
        })
        .filter(|(at, _)| *at >= since_ms)
        .collect();
    mine.sort_by_key(|(at, _)| *at);
    Ok(mine.into_iter().map(|(_, kind)| kind).collect())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The 3 signer pods, once they and the validator pod are 2/2 and Ready.
async fn wait_all_ready(cluster: &Cluster, timeout: Duration) -> Result<Vec<Value>> {
    let live = |selector| -> Result<Vec<Value>> {
        Ok(cluster
            .pods(selector)?
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect())
    };
    eventually(
        "3 signer pods and 1 validator pod 2/2 Running and Ready",
        timeout,
        || async {
            let signers = live(SIGNER_PODS)?;
            let validators = live(VALIDATOR_PODS)?;
            let all_ready = signers.iter().chain(&validators).all(two_of_two);
            Ok((signers.len() == 3 && validators.len() == 1 && all_ready).then_some(signers))
        },
    )
    .await
}

/// Writes straight to stderr: libtest captures `println!` of a passing test,
/// and CI's log should show every phase's time.
fn report(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "k8s test: {line}");
}

struct Phases(Instant);
impl Phases {
    fn done(&mut self, what: &str) {
        report(format_args!("phase {what}: {:?}", self.0.elapsed()));
        self.0 = Instant::now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geth_daemonset_with_agent_sidecar_on_a_three_node_cluster() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "this test needs root: scripts/k8s-local creates network namespaces, mounts and \
             containerd instances. Run it as root (CI does); it did NOT run."
        );
    }
    let root = workspace_root();
    let mut phases = Phases(Instant::now());
    for dir in HOST_DATADIRS {
        let _ = std::fs::remove_dir_all(dir);
    }
    let cluster = Cluster::up()?;
    phases.done("cluster up");

    // Every overlay renders, parses into typed objects, and holds the invariants.
    let kubectl_bin = root.join(".tools/k8s-v1.34.4/bin/kubectl");
    for (overlay, host) in [
        ("testnetsidechain", false),
        ("mainnetsidechain", false),
        ("local", true),
    ] {
        let objects = render(&kubectl_bin, &root.join("k8s/overlays").join(overlay))?;
        check_overlay(&objects, host).with_context(|| format!("overlay {overlay}"))?;
    }
    check_components(&kubectl_bin)?;
    phases.done("render and check overlays");

    // Server-side dry-run into namespaces that enforce "restricted": no warning.
    for overlay in ["testnetsidechain", "mainnetsidechain"] {
        cluster.k(&["create", "namespace", overlay])?;
        cluster.k(&[
            "label",
            "namespace",
            overlay,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ])?;
        let out = cluster
            .kubectl()
            .args(["apply", "--server-side", "--dry-run=server", "-k"])
            .arg(root.join("k8s/overlays").join(overlay))
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "dry-run of {overlay} failed: {stderr}"
        );
        ensure!(
            !stderr.to_lowercase().contains("warning"),
            "dry-run of {overlay} warned: {stderr}"
        );
        println!(
            "dry-run {overlay}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    phases.done("restricted dry-run");

    // Deploy testnetsidechain on the 3 nodes (overlays/local: host network and disks).
    let net = tempfile::tempdir()?;
    generate_network(net.path())?;
    let signers = signer_addresses(net.path())?;
    load_network(&cluster, net.path())?;
    cluster.k(&[
        "label",
        "namespace",
        NS,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=privileged",
        "pod-security.kubernetes.io/warn=privileged",
    ])?;
    cluster.k(&["label", "node", "kn3", "geth-clique/validator=true"])?;
    let mut apply = cluster.kubectl();
    apply
        .args(["apply", "--server-side", "-k"])
        .arg(root.join("k8s/overlays/local"));
    run(&mut apply)?;
    let pods = wait_all_ready(&cluster, 8 * MINUTE).await?;
    phases.done("deploy: 3 signer pods and 1 validator pod 2/2 Ready");

    // Each node claimed its own identity, each identity once.
    let mut claimed = BTreeMap::new();
    for pod in &pods {
        let node = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let identity = cluster.identity(&name(pod))?;
        ensure!(
            identity == format!("signer-{}", node.trim_start_matches("kn")),
            "{node} claimed {identity}"
        );
        ensure!(
            claimed.insert(identity.clone(), node).is_none(),
            "{identity} claimed twice"
        );
    }
    ensure!(claimed.len() == 3, "claims: {claimed:?}");
    println!("claims: {claimed:?}");

    // The 3 signers seal and agree on a head >= 20.
    let first = name(&pods[0]);
    eventually("every node at block 20", 5 * MINUTE, || async {
        let mut heads = Vec::new();
        for p in &pods {
            heads.push(head(&cluster, &name(p))?);
        }
        Ok(heads.iter().all(|h| *h >= 20).then_some(()))
    })
    .await?;
    let hashes: BTreeSet<String> = pods
        .iter()
        .map(|p| cluster.geth_exec(&name(p), "eth.getBlock(20).hash"))
        .collect::<Result<_>>()?;
    ensure!(hashes.len() == 1, "nodes disagree on block 20: {hashes:?}");
    let sealers = sealers_since(&cluster, &first, 0)?;
    let all: BTreeSet<String> = signers.values().cloned().collect();
    ensure!(sealers == all, "sealers {sealers:?}, signers {all:?}");
    phases.done("chain: head >= 20, agreement, all 3 sealing");

    // Service geth: exactly the ready validator pods (signers serve no
    // JSON-RPC), both read at the same moment (a pod may turn unready for a
    // moment on a loaded machine, and the endpoint controller follows it a
    // little later). By pod name: on host networks signer-3 and validator-1
    // share kn3's address.
    eventually(
        "Service geth's ready endpoints to be the ready validator pod",
        2 * MINUTE,
        || async {
            let slices = cluster.json(&[
                "get",
                "endpointslices",
                "-n",
                NS,
                "-l",
                "kubernetes.io/service-name=geth",
            ])?;
            let endpoints: BTreeSet<String> = slices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .filter_map(|e| e["targetRef"]["name"].as_str().map(str::to_owned))
                .collect();
            let ready: BTreeSet<String> = cluster
                .pods(VALIDATOR_PODS)?
                .iter()
                .filter(|p| pod_ready(p))
                .map(name)
                .collect();
            if endpoints != ready {
                println!("endpoints {endpoints:?}, ready validator pods {ready:?}: not yet equal");
            }
            Ok((endpoints == ready && ready.len() == 1).then_some(()))
        },
    )
    .await?;

    // JSON-RPC through Service geth reaches the validator, on the signers' chain.
    let chain_id = cluster.service_rpc("eth_chainId")?;
    ensure!(
        chain_id == "0x539",
        "chain id through Service geth: {chain_id}"
    );
    let validator = name(&cluster.pods(VALIDATOR_PODS)?[0]);
    let block20 = hashes.first().context("block 20")?.clone();
    eventually("the validator at block 20", 2 * MINUTE, || async {
        let hash =
            cluster.geth_exec(&validator, "eth.getBlock(20) ? eth.getBlock(20).hash : ''")?;
        ensure!(
            hash.is_empty() || hash == block20,
            "the validator has {hash} at block 20, the signers {block20}"
        );
        Ok((!hash.is_empty()).then_some(()))
    })
    .await?;
    let through_service = cluster.service_rpc("eth_blockNumber")?;
    println!("Service geth: chain id {chain_id}, head {through_service}");

    // The aggregator, in the cluster, lists the 4 nodes.
    eventually(
        "the aggregator lists 4 online nodes",
        3 * MINUTE,
        || async {
            let state = cluster.aggregator("/api/state")?;
            let online = state["nodes"]
                .as_array()
                .map(|ns| ns.iter().filter(|n| n["online"] == true).count())
                .unwrap_or(0);
            Ok((online == 4).then_some(()))
        },
    )
    .await?;
    phases.done("endpoints and aggregator");

    // kubectl delete pod: SIGTERM reaches geth, the agent (stopping last) proves a
    // clean stop and delivers it; the new pod reclaims signer-2 and its datadir.
    let old = cluster.pod_on("kn2")?.context("no pod on kn2")?;
    let received_before = cluster.verdicts_received("signer-2")?.len();
    let since = now_ms();
    cluster.k(&["delete", "pod", "-n", NS, &name(&old), "--wait=false"])?;
    let verdict = eventually(
        "signer-2's clean verdict at the aggregator",
        4 * MINUTE,
        || async {
            Ok(events_since(&cluster, "signer-2", since)?
                .into_iter()
                .find(|e| e["kind"] == "shutdown"))
        },
    )
    .await?;
    println!("signer-2 verdict after kubectl delete pod: {verdict}");
    ensure!(verdict["verdict"]["clean"] == true, "not clean: {verdict}");
    wait_all_ready(&cluster, 5 * MINUTE).await?;
    let new = cluster.pod_on("kn2")?.context("no new pod on kn2")?;
    ensure!(
        new["metadata"]["uid"] != old["metadata"]["uid"],
        "the pod was not replaced"
    );
    ensure!(
        cluster.identity(&name(&new))? == "signer-2",
        "kn2 lost signer-2"
    );
    // The old agent delivered the verdict itself, before it exited: the
    // aggregator had it before the new pod's agent started (which could
    // otherwise have sent it from the spool in the datadir).
    let received = *cluster
        .verdicts_received("signer-2")?
        .get(received_before)
        .context("the aggregator logged no verdict of signer-2")?;
    let new_agent = started_at(&new, "agent")?;
    println!("signer-2's verdict received at {received}, the new agent started at {new_agent}");
    ensure!(
        received.as_second() <= new_agent.as_second(),
        "the verdict ({received}) came after the new agent started ({new_agent})"
    );
    let ready_at = head(&cluster, &name(&new))?;
    let addr2 = signers.get("signer-2").context("signer-2")?.clone();
    eventually("signer-2 sealing again", 3 * MINUTE, || async {
        let kn1 = name(&cluster.pod_on("kn1")?.context("pod on kn1")?);
        Ok(sealers_since(&cluster, &kn1, ready_at)?
            .contains(&addr2)
            .then_some(()))
    })
    .await?;
    phases.done("delete pod: clean verdict, same identity, Ready, sealing");

    // `kubectl rollout restart ds/geth` restarts nothing (OnDelete): no order,
    // no sync wait, no verdict check. This is why the choreography exists.
    let before: BTreeSet<String> = cluster
        .geth_pods()?
        .iter()
        .map(|p| p["metadata"]["uid"].to_string())
        .collect();
    cluster.k(&["rollout", "restart", "-n", NS, "ds/geth"])?;
    let ds = eventually(
        "the DaemonSet controller saw the restart",
        2 * MINUTE,
        || async {
            let ds = cluster.json(&["get", "ds", "-n", NS, "geth"])?;
            let seen = ds["status"]["observedGeneration"] == ds["metadata"]["generation"];
            Ok(seen.then_some(ds))
        },
    )
    .await?;
    let after: BTreeSet<String> = cluster
        .geth_pods()?
        .iter()
        .map(|p| p["metadata"]["uid"].to_string())
        .collect();
    println!(
        "rollout restart: updatedNumberScheduled {}, pods replaced {}",
        ds["status"]["updatedNumberScheduled"],
        before.difference(&after).count()
    );
    ensure!(before == after, "rollout restart replaced pods");
    ensure!(
        ds["status"]["updatedNumberScheduled"].as_u64().unwrap_or(0) == 0,
        "rollout restart updated pods: {}",
        ds["status"]
    );
    phases.done("rollout restart: nothing restarted");

    // Node label geth-clique/paused: the DaemonSet deletes that node's pod
    // (clean verdict) and keeps it off; without the label the pod comes back
    // with the same identity (cordon and drain leave DaemonSet pods alone).
    let since = now_ms();
    cluster.k(&["label", "node", "kn3", "geth-clique/paused=true"])?;
    eventually(
        "the pod on kn3 deleted by the DaemonSet and gone",
        4 * MINUTE,
        || async {
            let pods = cluster.geth_pods()?;
            Ok(pods
                .iter()
                .all(|p| p["spec"]["nodeName"] != "kn3")
                .then_some(()))
        },
    )
    .await?;
    // The agent stops last: the verdict was delivered before it exited, so
    // before the pod was gone (no new agent exists to send it from the spool).
    let verdict = events_since(&cluster, "signer-3", since)?
        .into_iter()
        .find(|e| e["kind"] == "shutdown")
        .context("signer-3's pod is gone but the aggregator has no verdict of its stop")?;
    println!("paused: signer-3's verdict, delivered before its pod was gone: {verdict}");
    cluster.k(&["label", "node", "kn3", "geth-clique/paused-"])?;
    ensure!(verdict["verdict"]["clean"] == true, "paused: {verdict}");
    let pods = wait_all_ready(&cluster, 5 * MINUTE).await?;
    let back = pods
        .iter()
        .find(|p| p["spec"]["nodeName"] == "kn3")
        .context("no pod on kn3")?;
    ensure!(
        cluster.identity(&name(back))? == "signer-3",
        "kn3 lost signer-3"
    );
    phases.done("node paused by label: clean verdict, back with its identity");

    // The choreography, in the order 2,3,1: each geth stopped by its agent
    // (clean verdict), started again by the kubelet, in sync and sealing
    // before the next.
    let since = now_ms();
    let restarts_before: BTreeMap<String, u64> = cluster
        .geth_pods()?
        .iter()
        .map(|p| (p["spec"]["nodeName"].to_string(), restarts(p, "geth")))
        .collect();
    let out = cluster.k(&[
        "exec",
        "-n",
        NS,
        "deploy/geth-aggregator",
        "--",
        "env",
        "GETH_AGGREGATOR_URL=http://127.0.0.1:8080",
        "GETH_AGGREGATOR_ADMIN_TOKEN_FILE=/network/admin-token",
        "geth-aggregator",
        "restart",
        "--order",
        "2,3,1",
    ])?;
    println!("{out}");
    let mut order = Vec::new();
    for who in ["signer-1", "signer-2", "signer-3"] {
        let events = events_since(&cluster, who, since)?;
        let verdict = events
            .iter()
            .find(|e| e["kind"] == "shutdown")
            .with_context(|| format!("no verdict of {who} after the choreography"))?;
        ensure!(verdict["verdict"]["clean"] == true, "{who}: {verdict}");
        order.push((verdict["verdict"]["at"].as_u64().unwrap_or(0), who));
    }
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, who)| who).collect();
    ensure!(
        order == ["signer-2", "signer-3", "signer-1"],
        "restart order {order:?}"
    );
    let pods = wait_all_ready(&cluster, 5 * MINUTE).await?;
    for p in &pods {
        let node = p["spec"]["nodeName"].to_string();
        ensure!(
            restarts(p, "geth") > restarts_before.get(&node).copied().unwrap_or(0),
            "geth on {node} was not restarted by the kubelet"
        );
    }
    phases.done("choreography 2,3,1: clean verdicts, in order");

    // The agent container alone dies: the kubelet restarts the sidecar, geth is untouched.
    let pod = cluster.pod_on("kn3")?.context("no pod on kn3")?;
    let geth_id = container_id(&pod, "geth");
    let geth_restarts = restarts(&pod, "geth");
    let agent_restarts = restarts(&pod, "agent");
    let killed_at = Instant::now();
    cluster.kill_container("kn3", &container_id(&pod, "agent"))?;
    let again = eventually(
        "the agent restarted and the pod Ready",
        3 * MINUTE,
        || async {
            let p = cluster.pod_on("kn3")?.context("pod on kn3")?;
            Ok((restarts(&p, "agent") > agent_restarts && two_of_two(&p)).then_some(p))
        },
    )
    .await?;
    // The kubelet's own times (whole seconds): the new agent's start, and when
    // the pod last turned Ready. Before the start: the pod never went unready.
    let agent_started = started_at(&again, "agent")?;
    let ready = ready_since(&again)?;
    let after_start = ready.as_second() - agent_started.as_second();
    println!(
        "agent killed: Ready again after {:?} (seen by polling); the kubelet restarted the \
         agent at {agent_started}, the pod Ready since {ready} ({after_start} s after the start)",
        killed_at.elapsed(),
    );
    ensure!(
        after_start <= 3 * PERIOD as i64,
        "Ready {after_start} s after the agent started: more than 3 block periods"
    );
    ensure!(
        container_id(&again, "geth") == geth_id,
        "geth's container was replaced"
    );
    ensure!(restarts(&again, "geth") == geth_restarts, "geth restarted");
    phases.done("agent killed: geth untouched, Ready again");

    // SIGKILL geth: the kubelet restarts it; the agent reports the crash and blocks lost.
    let pod = cluster.pod_on("kn1")?.context("no pod on kn1")?;
    let geth_restarts = restarts(&pod, "geth");
    let since = now_ms();
    cluster.kill_container("kn1", &container_id(&pod, "geth"))?;
    let crash = eventually(
        "signer-1's crash and recovery reported",
        4 * MINUTE,
        || async {
            let events = events_since(&cluster, "signer-1", since)?;
            let shutdown = events.iter().find(|e| e["kind"] == "shutdown").cloned();
            let recovered = events.iter().find(|e| e["kind"] == "recovered").cloned();
            Ok(shutdown.zip(recovered))
        },
    )
    .await?;
    println!("signer-1 after SIGKILL: {} / {}", crash.0, crash.1);
    ensure!(
        crash.0["verdict"]["clean"] == false,
        "a SIGKILL reported clean: {}",
        crash.0
    );
    ensure!(
        crash.1["blocks_lost"].is_u64(),
        "no blocks lost count: {}",
        crash.1
    );
    let p = eventually(
        "geth restarted by the kubelet, pod Ready",
        4 * MINUTE,
        || async {
            let p = cluster.pod_on("kn1")?.context("pod on kn1")?;
            Ok((restarts(&p, "geth") > geth_restarts && two_of_two(&p)).then_some(p))
        },
    )
    .await?;
    ensure!(
        !p["metadata"]["deletionTimestamp"].is_string(),
        "the pod itself was replaced"
    );
    phases.done("geth SIGKILL: crash and blocks lost reported, Ready again");

    drop(cluster);
    Ok(())
}
