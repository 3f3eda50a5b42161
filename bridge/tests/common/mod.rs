//! Fixtures of the bridge tests: anvil (the "mainnet"), a geth clique
//! sidechain, deployed bridge pairs, signing keys in encrypted keystores, and
//! the signing service (in process or as the `geth-bridge` binary).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{bail, Context, Result};
use geth_bridge::client;
use geth_bridge::contracts::{AssetKind, DeployArgs, IBridge};
use serde_json::Value;
use testnet::eventually;

pub const MINUTE: Duration = Duration::from_secs(60);

/// anvil's default dev accounts (public test mnemonic), funded on every anvil.
pub const ANVIL_KEYS: [&str; 3] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804e8e56ffe",
];

pub fn anvil_key(i: usize) -> PrivateKeySigner {
    ANVIL_KEYS[i].parse().expect("valid test key")
}

/// One install at a time: tests of one binary run in parallel.
static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn npm_ci(dir: &Path) -> Result<()> {
    testnet::run_command(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )?;
    Ok(())
}

/// The pinned anvil from contracts/package.json, installed on first use.
pub fn anvil_bin() -> Result<PathBuf> {
    let contracts = testnet::workspace_root().join("contracts");
    let bin = contracts.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let _one = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        npm_ci(&contracts)?;
    }
    Ok(bin)
}

/// The browser test folder with ethers.js installed.
pub fn ethers_dir() -> Result<PathBuf> {
    let dir = testnet::workspace_root().join("tests/browser");
    let _one = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("node_modules/ethers").exists() {
        npm_ci(&dir)?;
    }
    Ok(dir)
}

/// One chain as the tests use it: URL, id, an admin wallet.
pub struct Chain {
    pub url: String,
    pub chain_id: u64,
    pub admin: PrivateKeySigner,
}

impl Chain {
    pub fn provider(&self, key: &PrivateKeySigner) -> Result<DynProvider> {
        Ok(ProviderBuilder::new()
            .wallet(EthereumWallet::from(key.clone()))
            .connect_http(self.url.parse()?)
            .erased())
    }

    pub fn admin_provider(&self) -> Result<DynProvider> {
        self.provider(&self.admin)
    }

    pub async fn raw(&self, method: &'static str, params: Value) -> Result<Value> {
        let p = self.admin_provider()?;
        Ok(p.raw_request::<_, Value>(method.into(), params).await?)
    }

    pub async fn head(&self) -> Result<u64> {
        Ok(self.admin_provider()?.get_block_number().await?)
    }

    /// Deploys one bridge contract (cap 10^30 units per hour).
    pub async fn deploy(
        &self,
        kind: AssetKind,
        home: bool,
        validators: &[Address],
        threshold: u64,
    ) -> Result<Address> {
        let args = DeployArgs {
            name: "Bridged".into(),
            symbol: "BRG".into(),
            home,
            admin: self.admin.address(),
            validators: validators.to_vec(),
            threshold,
            cap: U256::from(10u64).pow(U256::from(30u64)),
            period_secs: 3600,
        };
        Ok(client::deploy(&self.admin_provider()?, kind, &args).await?)
    }

    pub async fn call(
        &self,
        contract: Address,
        call: &impl alloy::sol_types::SolCall,
    ) -> Result<()> {
        client::send(&self.admin_provider()?, client::call_tx(contract, call)).await?;
        Ok(())
    }

    pub fn bridge_at(&self, contract: Address) -> Result<IBridge::IBridgeInstance<DynProvider>> {
        Ok(IBridge::new(contract, self.admin_provider()?))
    }
}

/// An anvil on a free loopback port, killed on drop.
pub struct Anvil {
    child: Child,
    pub chain: Chain,
}

impl Anvil {
    pub async fn start(chain_id: u64) -> Result<Self> {
        let port = testnet::free_ports(1)?[0];
        let child = Command::new(anvil_bin()?)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chain-id", &chain_id.to_string(), "--hardfork", "berlin"])
            .args(["--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start anvil")?;
        let anvil = Self {
            child,
            chain: Chain {
                url: format!("http://127.0.0.1:{port}"),
                chain_id,
                admin: anvil_key(0),
            },
        };
        let provider = anvil.chain.admin_provider()?;
        eventually("anvil to answer", MINUTE, || {
            let provider = provider.clone();
            async move { Ok(provider.get_chain_id().await.ok()) }
        })
        .await?;
        Ok(anvil)
    }

    pub async fn mine(&self, blocks: u64) -> Result<()> {
        self.chain
            .raw("anvil_mine", serde_json::json!([blocks]))
            .await?;
        Ok(())
    }

    pub async fn fund(&self, who: Address) -> Result<()> {
        let wei = U256::from(10u64).pow(U256::from(21u64));
        self.chain
            .raw("anvil_setBalance", serde_json::json!([who, wei]))
            .await?;
        Ok(())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A geth clique sidechain (one signer, one validator serving HTTP).
pub struct Sidechain {
    pub net: testnet::TestNetwork,
    pub chain: Chain,
}

impl Sidechain {
    pub async fn start() -> Result<Self> {
        let net = testnet::TestNetwork::start(testnet::NetworkOptions {
            signers: 1,
            validators: 1,
            ..Default::default()
        })
        .await?;
        let validator = net
            .nodes
            .iter()
            .find(|n| n.info.signer.is_none())
            .context("a validator")?;
        let account = &net.network.accounts[0];
        let password = std::fs::read_to_string(net.network_dir.join("accounts/password"))?;
        let admin = PrivateKeySigner::decrypt_keystore(
            net.network_dir.join(&account.keystore),
            password.trim_end(),
        )?;
        let chain = Chain {
            url: validator.http_url(),
            chain_id: net.network.chain_id,
            admin,
        };
        let provider = chain.admin_provider()?;
        eventually(
            "the sidechain validator to serve blocks",
            2 * MINUTE,
            || {
                let provider = provider.clone();
                async move { Ok(provider.get_block_number().await.ok().filter(|n| *n >= 2)) }
            },
        )
        .await?;
        Ok(Self { net, chain })
    }
}

/// A direction's signing key in an encrypted keystore with a password file.
pub struct Key {
    pub signer: PrivateKeySigner,
    pub keystore: PathBuf,
    pub password_file: PathBuf,
    pub password: String,
}

pub fn new_key(dir: &Path, name: &str) -> Result<Key> {
    let password = format!("pw-{}", hex::encode(rand::random::<[u8; 16]>()));
    let keys = dir.join(format!("keys-{name}"));
    std::fs::create_dir_all(&keys)?;
    let mut rng = alloy::signers::k256::elliptic_curve::rand_core::OsRng;
    let (signer, file) = PrivateKeySigner::new_keystore(&keys, &mut rng, &password, None)?;
    let password_file = dir.join(format!("{name}.password"));
    std::fs::write(&password_file, format!("{password}\n"))?;
    Ok(Key {
        signer,
        keystore: keys.join(file),
        password_file,
        password,
    })
}

/// One `[[direction]]` of the service config.
pub struct DirectionSpec<'a> {
    pub name: &'a str,
    pub source: &'a Chain,
    pub destination: &'a Chain,
    pub confirmations: u64,
    pub key: &'a Key,
    /// (kind, source contract, destination contract)
    pub pairs: Vec<(AssetKind, Address, Address)>,
}

pub fn write_config(
    dir: &Path,
    listen: SocketAddr,
    directions: &[DirectionSpec<'_>],
) -> Result<PathBuf> {
    let mut text = format!(
        "listen = \"{listen}\"\nstore = \"{}\"\nrate_limit_per_minute = 100000\n",
        dir.join("bridge.sqlite").display()
    );
    for d in directions {
        text += &format!(
            "\n[[direction]]\nname = \"{}\"\nsource_rpc = \"{}\"\nsource_chain_id = {}\nconfirmations = {}\n\
             destination_chain_id = {}\ndestination_rpc = \"{}\"\nkeystore = \"{}\"\npassword_file = \"{}\"\n",
            d.name,
            d.source.url,
            d.source.chain_id,
            d.confirmations,
            d.destination.chain_id,
            d.destination.url,
            d.key.keystore.display(),
            d.key.password_file.display(),
        );
        for (kind, source, destination) in &d.pairs {
            let kind = match kind {
                AssetKind::Erc20 => "erc20",
                AssetKind::Erc721 => "erc721",
            };
            text += &format!(
                "[[direction.pair]]\nkind = \"{kind}\"\nsource = \"{source}\"\ndestination = \"{destination}\"\n"
            );
        }
    }
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A config of one direction `d` between two chains nobody listens on
/// (port 9), for tests that never reach a chain; its key's password file is
/// the key's.
pub fn offline_config(dir: &Path, key: &Key) -> Result<PathBuf> {
    let chain = |chain_id| Chain {
        url: "http://127.0.0.1:9".into(),
        chain_id,
        admin: anvil_key(0),
    };
    let (source, destination) = (chain(1), chain(2));
    write_config(
        dir,
        "127.0.0.1:0".parse()?,
        &[DirectionSpec {
            name: "d",
            source: &source,
            destination: &destination,
            confirmations: 1,
            key,
            pairs: vec![(
                AssetKind::Erc20,
                anvil_key(1).address(),
                anvil_key(2).address(),
            )],
        }],
    )
}

/// Makes `contract_a` on `a` and `contract_b` on `b` each other's peer.
pub async fn peer_both_ways(
    a: &Chain,
    contract_a: Address,
    b: &Chain,
    contract_b: Address,
) -> Result<()> {
    set_peer(a, contract_a, b.chain_id, contract_b).await?;
    set_peer(b, contract_b, a.chain_id, contract_a).await
}

/// Makes `peer` on chain `peer_chain` the peer of `contract` on `chain`.
pub async fn set_peer(
    chain: &Chain,
    contract: Address,
    peer_chain: u64,
    peer: Address,
) -> Result<()> {
    chain
        .call(
            contract,
            &IBridge::setPeerCall {
                chainId: U256::from(peer_chain),
                peer,
            },
        )
        .await?;
    Ok(())
}

/// Two anvil chains with an ERC-20 bridge pair: minted on `a`, its peer on
/// `b` accepting claims signed by `key` (direction `a-to-b`, 1 confirmation);
/// `b`'s contract is peered back only when `both_ways`.
pub struct Erc20Pair {
    pub a: Anvil,
    pub b: Anvil,
    pub key: Key,
    pub token_a: Address,
    pub token_b: Address,
    pub config: PathBuf,
}

pub async fn erc20_pair(dir: &Path, chain_ids: (u64, u64), both_ways: bool) -> Result<Erc20Pair> {
    let a = Anvil::start(chain_ids.0).await?;
    let b = Anvil::start(chain_ids.1).await?;
    let key = new_key(dir, "a-to-b")?;
    let token_a = a
        .chain
        .deploy(AssetKind::Erc20, true, &[anvil_key(2).address()], 1)
        .await?;
    let token_b = b
        .chain
        .deploy(AssetKind::Erc20, false, &[key.signer.address()], 1)
        .await?;
    if both_ways {
        peer_both_ways(&a.chain, token_a, &b.chain, token_b).await?;
    } else {
        set_peer(&a.chain, token_a, b.chain.chain_id, token_b).await?;
    }
    let config = write_config(
        dir,
        "127.0.0.1:0".parse()?,
        &[DirectionSpec {
            name: "a-to-b",
            source: &a.chain,
            destination: &b.chain,
            confirmations: 1,
            key: &key,
            pairs: vec![(AssetKind::Erc20, token_a, token_b)],
        }],
    )?;
    Ok(Erc20Pair {
        a,
        b,
        key,
        token_a,
        token_b,
        config,
    })
}

/// The service in this process, on a free loopback port.
pub async fn serve_in_process(config: &Path) -> Result<(String, tokio::task::JoinHandle<()>)> {
    serve_in_process_limited(config, 100_000).await
}

/// The same with a rate limit of `per_minute` requests per client.
pub async fn serve_in_process_limited(
    config: &Path,
    per_minute: u32,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let config = geth_bridge::Config::load(config)?;
    let service = geth_bridge::Service::new(&config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = geth_bridge::serve(service, per_minute, listener, std::future::pending()).await;
    });
    Ok((url, task))
}

/// The `geth-bridge serve` binary, killed on drop; its log is kept for greps.
pub struct ServiceProcess {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl ServiceProcess {
    pub async fn spawn(config: &Path, listen: SocketAddr, log: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_geth-bridge"))
            .args(["serve", "--config"])
            .arg(config)
            // Everything the service could log, to grep it for secrets.
            .env("RUST_LOG", "trace")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let me = Self {
            child,
            url: format!("http://{listen}"),
            log: log.to_owned(),
        };
        let http = reqwest::Client::new();
        let health = format!("{}/healthz", me.url);
        eventually("the signing service to answer", MINUTE, || {
            let http = http.clone();
            let health = health.clone();
            async move {
                Ok(http
                    .get(&health)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success()))
            }
        })
        .await?;
        Ok(me)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// POSTs a signing request; returns (HTTP status, JSON body).
pub async fn ask(base: &str, direction: &str, body: Value) -> Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{base}/bridge/v1/{direction}/sign"))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// Asks until the deposit is signed (the source must keep producing blocks).
pub async fn signed(
    base: &str,
    direction: &str,
    tx: alloy::primitives::TxHash,
) -> Result<geth_bridge::service::SignedClaim> {
    let http = reqwest::Client::new();
    eventually("the deposit to be signed", 3 * MINUTE, || {
        let http = http.clone();
        async move {
            match client::fetch_signature(&http, base, direction, tx, None).await {
                Ok(s) => Ok(Some(s)),
                Err(client::ClientError::Pending { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

/// The custom error a call reverts with (the claim is checked by eth_call
/// against the current state, exactly as the transaction would run).
pub async fn revert_of(
    provider: &DynProvider,
    tx: TransactionRequest,
) -> Result<IBridge::IBridgeErrors> {
    match provider.call(tx).await {
        Ok(_) => bail!("the call succeeded"),
        Err(e) => e
            .as_error_resp()
            .and_then(|p| p.as_decoded_interface_error::<IBridge::IBridgeErrors>())
            .with_context(|| format!("not a bridge error: {e}")),
    }
}

/// Recovers the signer and digest of a signed claim with ethers.js.
pub fn ethers_verify(signed: &geth_bridge::service::SignedClaim) -> Result<(Address, String)> {
    let dir = ethers_dir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_claim.mjs");
    let out = testnet::run_command(
        Command::new("node")
            .arg(script)
            .arg(serde_json::to_string(signed)?)
            .env("ETHERS_DIR", dir),
    )?;
    let mut lines = out.lines();
    let signer = lines.next().context("no signer")?.parse()?;
    let digest = lines.next().context("no digest")?.to_string();
    Ok((signer, digest))
}
