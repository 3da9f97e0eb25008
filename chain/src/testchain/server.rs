//! The test chain's JSON-RPC server (the legacy Substrate methods subxt's
//! RPC layer speaks), on loopback. Blocks are made on a timer; extrinsics
//! are decoded and their signatures and nonces checked on submission, and
//! applied by the rules in the next block.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonrpsee::server::{
    PendingSubscriptionSink, RpcModule, Server, ServerHandle, SubscriptionMessage,
};
use jsonrpsee::types::ErrorObjectOwned;
use parity_scale_codec::{Compact, Decode, Encode};
use serde_json::{json, Value};
use subxt::Metadata;
use tokio::sync::broadcast;
use tvm_protocol::keys::AccountId;

use super::rules::{DispatchError, Fixture, Subnet};
use crate::extrinsic::{self, ChainState};
use crate::hyperparams::{self, Item};
use crate::neurons;

/// Shown by `system_chain` and in logs: nobody should mistake it for subtensor.
pub const BANNER: &str = "tvm TEST CHAIN (loopback; not subtensor; for tests and the devnet)";

#[derive(Debug, Clone, Encode)]
struct Header {
    parent_hash: [u8; 32],
    number: Compact<u32>,
    state_root: [u8; 32],
    extrinsics_root: [u8; 32],
    digest: Vec<()>,
}

impl Header {
    fn hash(&self) -> [u8; 32] {
        use blake2::digest::consts::U32;
        use blake2::{Blake2b, Digest};
        Blake2b::<U32>::digest(self.encode()).into()
    }

    fn json(&self) -> Value {
        json!({
            "parentHash": hex0x(&self.parent_hash),
            "number": format!("0x{:x}", self.number.0),
            "stateRoot": hex0x(&self.state_root),
            "extrinsicsRoot": hex0x(&self.extrinsics_root),
            "digest": {"logs": []},
        })
    }
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn unhex(s: &str) -> Result<Vec<u8>, ErrorObjectOwned> {
    hex::decode(s.trim_start_matches("0x")).map_err(|e| rpc_error(-32602, format!("not hex: {e}")))
}

fn rpc_error(code: i32, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg.into(), None::<()>)
}

/// What happened to one extrinsic, for watchers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub block: u32,
    pub block_hash: [u8; 32],
    pub signer: AccountId,
    pub call: String,
    pub result: Result<(), DispatchError>,
}

struct Inner {
    md: Metadata,
    metadata_bytes: Vec<u8>,
    runtime_version: Value,
    chain: ChainState,
    headers: Vec<Header>,
    /// Per block: its extrinsics and its encoded `System.Events`.
    bodies: Vec<(Vec<Vec<u8>>, Vec<u8>)>,
    subnet: Subnet,
    nonces: HashMap<AccountId, u64>,
    pool: Vec<(Vec<u8>, extrinsic::Verified)>,
    outcomes: HashMap<[u8; 32], Outcome>,
}

/// A running test chain.
pub struct TestChain {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    heads: broadcast::Sender<Header>,
    handle: ServerHandle,
    blocks: tokio::task::JoinHandle<()>,
    /// While set, no block is made (tests hold the chain still).
    paused: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestChainError {
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Fixture(#[from] super::rules::FixtureError),
    #[error("the metadata's System.Version cannot be read: {0}")]
    Version(String),
    #[error("cannot start the test chain's RPC server: {0}")]
    Server(String),
}

/// `System.Version` from the metadata: the runtime version this chain claims.
#[derive(Decode)]
struct RuntimeVersion {
    spec_name: String,
    impl_name: String,
    authoring_version: u32,
    spec_version: u32,
    impl_version: u32,
    apis: Vec<([u8; 8], u32)>,
    transaction_version: u32,
}

fn runtime_version(md: &Metadata) -> Result<(Value, u32, u32), TestChainError> {
    let c = md
        .pallet_by_name("System")
        .and_then(|p| p.constant_by_name("Version"))
        .ok_or_else(|| TestChainError::Version("no System.Version constant".into()))?;
    let v = RuntimeVersion::decode(&mut c.value())
        .map_err(|e| TestChainError::Version(e.to_string()))?;
    let apis: Vec<Value> = v
        .apis
        .iter()
        .map(|(id, ver)| json!([hex0x(id), ver]))
        .collect();
    Ok((
        json!({
            "specName": v.spec_name, "implName": v.impl_name, "authoringVersion": v.authoring_version,
            "specVersion": v.spec_version, "implVersion": v.impl_version, "apis": apis,
            "transactionVersion": v.transaction_version, "stateVersion": 1,
        }),
        v.spec_version,
        v.transaction_version,
    ))
}

impl TestChain {
    /// Start on 127.0.0.1 (port 0: any free one), making a block every `block_time`.
    pub async fn start(
        fixture: Fixture,
        metadata_bytes: &[u8],
        port: u16,
        block_time: Duration,
    ) -> Result<Self, TestChainError> {
        let md = crate::metadata::decode(metadata_bytes)?;
        let (runtime_version, spec_version, transaction_version) = runtime_version(&md)?;
        let genesis = Header {
            parent_hash: [0; 32],
            number: Compact(0),
            state_root: [0; 32],
            extrinsics_root: [0; 32],
            digest: vec![],
        };
        let chain = ChainState {
            genesis_hash: genesis.hash(),
            spec_version,
            transaction_version,
        };
        let inner = Arc::new(Mutex::new(Inner {
            md,
            metadata_bytes: metadata_bytes.to_vec(),
            runtime_version,
            chain,
            headers: vec![genesis],
            bodies: vec![(Vec::new(), vec![0])],
            subnet: Subnet::new(fixture)?,
            nonces: HashMap::new(),
            pool: Vec::new(),
            outcomes: HashMap::new(),
        }));
        let (heads, _) = broadcast::channel(64);
        let module = rpc_module(inner.clone(), heads.clone())
            .map_err(|e| TestChainError::Server(e.to_string()))?;
        let server = Server::builder()
            .build(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .map_err(|e| TestChainError::Server(e.to_string()))?;
        let addr = server
            .local_addr()
            .map_err(|e| TestChainError::Server(e.to_string()))?;
        let handle = server.start(module);
        let (bi, bh) = (inner.clone(), heads.clone());
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = paused.clone();
        let blocks = tokio::spawn(async move {
            let mut tick = tokio::time::interval(block_time);
            tick.tick().await;
            loop {
                tick.tick().await;
                if held.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
                let header = produce_block(&bi);
                let _ = bh.send(header);
            }
        });
        Ok(TestChain {
            addr,
            inner,
            heads,
            handle,
            blocks,
            paused,
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stop making blocks until [`TestChain::resume`]: a test can then rely
    /// on the chain's height (a rate limit not passing behind its back on a
    /// slow machine).
    pub fn pause(&self) {
        self.paused
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The current best block number.
    pub fn block(&self) -> u32 {
        self.lock().headers.len() as u32 - 1
    }

    pub fn outcome(&self, tx_hash: &[u8; 32]) -> Option<Outcome> {
        self.lock().outcomes.get(tx_hash).cloned()
    }

    /// The weights the chain holds, by setter uid.
    pub fn weights(&self) -> std::collections::BTreeMap<u16, Vec<(u16, u16)>> {
        self.lock().subnet.weights.clone()
    }

    /// What became of each commit the chain tried to reveal.
    pub fn reveals(&self) -> Vec<super::rules::Reveal> {
        self.lock().subnet.reveals.clone()
    }

    /// Commits not revealed yet.
    pub fn pending_commits(&self) -> usize {
        self.lock().subnet.commits.values().map(Vec::len).sum()
    }

    pub fn chain_state(&self) -> ChainState {
        self.lock().chain
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop(self) {
        self.blocks.abort();
        let _ = self.handle.stop();
        drop(self.heads);
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Make the next block: apply the pool in order.
fn produce_block(inner: &Mutex<Inner>) -> Header {
    let mut g = lock(inner);
    let number = g.headers.len() as u32;
    let parent = g.headers.last().map(Header::hash).unwrap_or_default();
    let pool = std::mem::take(&mut g.pool);
    let mut root = Vec::new();
    for (bytes, _) in &pool {
        root.extend_from_slice(bytes);
    }
    use blake2::digest::consts::U32;
    use blake2::{Blake2b, Digest};
    let extrinsics_root: [u8; 32] = Blake2b::<U32>::digest(&root).into();
    let header = Header {
        parent_hash: parent,
        number: Compact(number),
        state_root: [0; 32],
        extrinsics_root,
        digest: vec![],
    };
    let hash = header.hash();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    g.subnet.on_block(u64::from(number), now);
    let mut extrinsics = Vec::new();
    let mut results = Vec::new();
    for (i, (bytes, v)) in pool.into_iter().enumerate() {
        let result = g.subnet.apply(&v, u64::from(number));
        let tx: [u8; 32] = Blake2b::<U32>::digest(&bytes).into();
        results.push((i as u32, result.err().map(|e| e.to_string())));
        g.outcomes.insert(
            tx,
            Outcome {
                block: number,
                block_hash: hash,
                signer: v.signer,
                call: v.call.clone(),
                result,
            },
        );
        extrinsics.push(bytes);
    }
    let events = crate::events::encode(&g.md, &results).unwrap_or_else(|e| {
        // The test chain has no logger of its own.
        eprintln!("tvm test chain: cannot encode the block's events: {e}");
        vec![0]
    });
    g.headers.push(header.clone());
    g.bodies.push((extrinsics, events));
    header
}

/// The commit-reveal storage the test chain serves: the version, the
/// reveal period, its beacon (`Drand.BeaconConfig`), each uid's weights.
fn commit_reveal_storage(g: &Inner, key: &[u8]) -> Option<Vec<u8>> {
    use crate::hyperparams::{
        key_of, BEACON_CONFIG, COMMITS, COMMIT_REVEAL_VERSION, REVEAL_PERIOD_EPOCHS, WEIGHTS,
    };
    let (s, md) = (&g.subnet, &g.md);
    let f = &s.fixture;
    let is = |k: Result<Vec<u8>, _>| k.is_ok_and(|k| k == key);
    if is(key_of(
        md,
        COMMIT_REVEAL_VERSION.0,
        COMMIT_REVEAL_VERSION.1,
        (),
    )) {
        return Some(f.commit_reveal_version.encode());
    }
    if is(key_of(
        md,
        REVEAL_PERIOD_EPOCHS.0,
        REVEAL_PERIOD_EPOCHS.1,
        (f.netuid,),
    )) {
        return Some(f.reveal_period_epochs.encode());
    }
    if is(key_of(md, BEACON_CONFIG.0, BEACON_CONFIG.1, ())) {
        let b = &s.beacon.beacon;
        // BeaconConfiguration: public key, period, genesis time, hash,
        // group hash, scheme id, metadata (beacon id).
        return Some(
            (
                b.public_key.clone(),
                b.period as u32,
                b.genesis_time as u32,
                vec![0u8; 32],
                vec![0u8; 32],
                b"bls-unchained-g1-rfc9380".to_vec(),
                b"tvm-test-beacon".to_vec(),
            )
                .encode(),
        );
    }
    if let Some((_, queue)) = s
        .commits
        .iter()
        .find(|(epoch, _)| is(key_of(md, COMMITS.0, COMMITS.1, (f.netuid, **epoch))))
    {
        let stored: Vec<crate::hyperparams::StoredCommit> = queue
            .iter()
            .map(|c| (c.who.0, c.block, c.commit.clone(), c.reveal_round))
            .collect();
        return Some(stored.encode());
    }
    s.weights
        .iter()
        .find(|(uid, _)| is(key_of(md, WEIGHTS.0, WEIGHTS.1, (f.netuid, **uid))))
        .map(|(_, w)| w.encode())
}

fn block_at(g: &Inner, hash: Option<String>) -> Result<usize, ErrorObjectOwned> {
    match hash {
        None => Ok(g.headers.len() - 1),
        Some(h) => {
            let h = unhex(&h)?;
            g.headers
                .iter()
                .position(|x| x.hash()[..] == h[..])
                .ok_or_else(|| rpc_error(4003, "unknown block"))
        }
    }
}

fn submit(inner: &Mutex<Inner>, hex_ext: &str) -> Result<[u8; 32], ErrorObjectOwned> {
    let bytes = unhex(hex_ext)?;
    let mut g = lock(inner);
    let current = (g.headers.len() - 1) as u64;
    let hashes: Vec<[u8; 32]> = g.headers.iter().map(Header::hash).collect();
    // Substrate's code for invalid transactions; the reason in the message too.
    let invalid = |why: String| {
        ErrorObjectOwned::owned(1010, format!("Invalid Transaction: {why}"), Some(why))
    };
    let v = extrinsic::verify(&g.md, &g.chain, &bytes, current, |n| {
        hashes.get(n as usize).copied()
    })
    .map_err(|e| invalid(e.to_string()))?;
    let expected = g.nonces.get(&v.signer).copied().unwrap_or(0);
    if v.nonce < expected {
        return Err(invalid(format!(
            "Transaction is outdated (nonce {} < {expected})",
            v.nonce
        )));
    }
    if v.nonce > expected {
        return Err(invalid(format!(
            "Transaction will be valid in the future (nonce {} > {expected})",
            v.nonce
        )));
    }
    g.nonces.insert(v.signer, expected + 1);
    use blake2::digest::consts::U32;
    use blake2::{Blake2b, Digest};
    let tx: [u8; 32] = Blake2b::<U32>::digest(&bytes).into();
    g.pool.push((bytes, v));
    Ok(tx)
}

fn rpc_module(
    inner: Arc<Mutex<Inner>>,
    heads: broadcast::Sender<Header>,
) -> Result<RpcModule<Arc<Mutex<Inner>>>, jsonrpsee::core::RegisterMethodError> {
    let mut m = RpcModule::new(inner);
    m.register_method("system_chain", |_, _, _| BANNER)?;
    m.register_method("system_name", |_, _, _| "tvm-test-chain")?;
    m.register_method("system_version", |_, _, _| env!("CARGO_PKG_VERSION"))?;
    m.register_method("system_chainType", |_, _, _| "Development")?;
    m.register_method(
        "system_health",
        |_, _, _| json!({"peers": 0, "isSyncing": false, "shouldHavePeers": false}),
    )?;
    m.register_method(
        "system_properties",
        |_, _, _| json!({"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"}),
    )?;
    m.register_method("state_getMetadata", |_, ctx, _| {
        hex0x(&lock(ctx).metadata_bytes)
    })?;
    m.register_method("state_getRuntimeVersion", |_, ctx, _| {
        lock(ctx).runtime_version.clone()
    })?;
    m.register_method(
        "chain_getBlockHash",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let n: Option<Value> = p.sequence().optional_next().unwrap_or(None);
            let g = lock(ctx);
            let n = match n {
                None | Some(Value::Null) => Some(g.headers.len() - 1),
                Some(Value::Number(x)) => x.as_u64().map(|x| x as usize),
                Some(Value::String(s)) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
                    .ok()
                    .map(|x| x as usize),
                _ => None,
            };
            Ok(n.and_then(|n| g.headers.get(n))
                .map_or(Value::Null, |h| json!(hex0x(&h.hash()))))
        },
    )?;
    m.register_method("chain_getFinalizedHead", |_, ctx, _| {
        let g = lock(ctx);
        hex0x(&g.headers.last().map(Header::hash).unwrap_or_default())
    })?;
    m.register_method(
        "chain_getHeader",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let h: Option<String> = p.sequence().optional_next().unwrap_or(None);
            let g = lock(ctx);
            let i = block_at(&g, h)?;
            Ok(g.headers[i].json())
        },
    )?;
    m.register_method(
        "system_accountNextIndex",
        |p, ctx, _| -> Result<u64, ErrorObjectOwned> {
            let who: String = p.one().map_err(|e| rpc_error(-32602, e.to_string()))?;
            let who = AccountId::from_ss58(&who).map_err(|e| rpc_error(-32602, e.to_string()))?;
            Ok(lock(ctx).nonces.get(&who).copied().unwrap_or(0))
        },
    )?;
    m.register_method(
        "state_call",
        |p, ctx, _| -> Result<String, ErrorObjectOwned> {
            let mut seq = p.sequence();
            let name: String = seq.next().map_err(|e| rpc_error(-32602, e.to_string()))?;
            let data: String = seq.next().map_err(|e| rpc_error(-32602, e.to_string()))?;
            let data = unhex(&data)?;
            let g = lock(ctx);
            let out = match name.as_str() {
                "NeuronInfoRuntimeApi_get_neurons_lite" => {
                    let netuid = u16::decode(&mut &data[..])
                        .map_err(|e| rpc_error(-32602, e.to_string()))?;
                    if netuid == g.subnet.fixture.netuid {
                        g.subnet.neurons.encode()
                    } else {
                        Vec::<neurons::NeuronInfoLite>::new().encode()
                    }
                }
                "Metadata_metadata_versions" => vec![14u32, 15, 16].encode(),
                "Metadata_metadata_at_version" => {
                    // The served metadata is `state_getMetadata`'s: its inner bytes.
                    Some(g.metadata_bytes.clone()).encode()
                }
                other => {
                    return Err(rpc_error(
                        -32000,
                        format!("the test chain does not implement runtime call {other}"),
                    ))
                }
            };
            Ok(hex0x(&out))
        },
    )?;
    m.register_method("chain_getBlock", |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
        let h: Option<String> = p.sequence().optional_next().unwrap_or(None);
        let g = lock(ctx);
        let i = block_at(&g, h)?;
        let extrinsics: Vec<String> = g.bodies[i].0.iter().map(|x| hex0x(x)).collect();
        Ok(json!({"block": {"header": g.headers[i].json(), "extrinsics": extrinsics}, "justifications": null}))
    })?;
    m.register_method(
        "state_getStorage",
        |p, ctx, _| -> Result<Value, ErrorObjectOwned> {
            let mut seq = p.sequence();
            let key: String = seq.next().map_err(|e| rpc_error(-32602, e.to_string()))?;
            let at: Option<String> = seq.optional_next().unwrap_or(None);
            let key = unhex(&key)?;
            let g = lock(ctx);
            if key[..] == crate::events::key()[..] {
                let i = block_at(&g, at)?;
                return Ok(json!(hex0x(&g.bodies[i].1)));
            }
            let f = &g.subnet.fixture;
            let netuid = f.netuid;
            for item in Item::ALL {
                let Ok(k) = hyperparams::storage_key(&g.md, item, netuid) else {
                    continue;
                };
                if k == key {
                    let v = match item {
                        Item::CommitRevealWeightsEnabled => f.commit_reveal.encode(),
                        Item::WeightsSetRateLimit => f.weights_rate_limit.encode(),
                        Item::WeightsVersionKey => f.weights_version_key.encode(),
                        Item::Tempo => f.tempo.encode(),
                        Item::LastUpdate => g.subnet.last_update.encode(),
                    };
                    return Ok(json!(hex0x(&v)));
                }
            }
            Ok(commit_reveal_storage(&g, &key)
                .map(|v| json!(hex0x(&v)))
                .unwrap_or(Value::Null))
        },
    )?;
    m.register_method(
        "author_submitExtrinsic",
        |p, ctx, _| -> Result<String, ErrorObjectOwned> {
            let x: String = p.one().map_err(|e| rpc_error(-32602, e.to_string()))?;
            Ok(hex0x(&submit(ctx, &x)?))
        },
    )?;
    let h = heads.clone();
    for (sub, notif, unsub) in [
        (
            "chain_subscribeNewHeads",
            "chain_newHead",
            "chain_unsubscribeNewHeads",
        ),
        (
            "chain_subscribeAllHeads",
            "chain_allHead",
            "chain_unsubscribeAllHeads",
        ),
        (
            "chain_subscribeFinalizedHeads",
            "chain_finalizedHead",
            "chain_unsubscribeFinalizedHeads",
        ),
    ] {
        let h = h.clone();
        m.register_subscription(
            sub,
            notif,
            unsub,
            move |_, pending: PendingSubscriptionSink, _, _| {
                let mut rx = h.subscribe();
                async move {
                    let Ok(sink) = pending.accept().await else {
                        return;
                    };
                    while let Ok(header) = rx.recv().await {
                        let Ok(msg) = SubscriptionMessage::from_json(&header.json()) else {
                            return;
                        };
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
            },
        )?;
    }
    let h = heads;
    m.register_subscription(
        "author_submitAndWatchExtrinsic",
        "author_extrinsicUpdate",
        "author_unwatchExtrinsic",
        move |p, pending, ctx, _| {
            let mut rx = h.subscribe();
            async move {
                let x: String = match p.one() {
                    Ok(x) => x,
                    Err(e) => {
                        pending.reject(e).await;
                        return;
                    }
                };
                let tx = match submit(&ctx, &x) {
                    Ok(tx) => tx,
                    Err(e) => {
                        pending.reject(e).await;
                        return;
                    }
                };
                let Ok(sink) = pending.accept().await else {
                    return;
                };
                let send = |v: Value| SubscriptionMessage::from_json(&v);
                if let Ok(m) = send(json!("ready")) {
                    let _ = sink.send(m).await;
                }
                while let Ok(header) = rx.recv().await {
                    let hash = hex0x(&header.hash());
                    if lock(&ctx).outcomes.contains_key(&tx) {
                        for v in [json!({"inBlock": hash}), json!({"finalized": hash})] {
                            if let Ok(m) = send(v) {
                                let _ = sink.send(m).await;
                            }
                        }
                        return;
                    }
                }
            }
        },
    )?;
    let names: Vec<String> = m.method_names().map(str::to_string).collect();
    m.register_method(
        "rpc_methods",
        move |_, _, _| json!({"version": 1, "methods": names}),
    )?;
    Ok(m)
}
