//! From a round's node verdicts to weights. Every real GPU counts once:
//! GPUs are deduplicated by their NVIDIA-signed identity and CVMs by their
//! proven CVM id (the RA-TLS key's hash) across all miners, and a duplicate
//! scores zero for every claimant (so relaying someone else's node can never
//! pay). One miner reaching the same CVM through two of its entries is one
//! node, counted once. An unproven CVM id is never compared: anyone can claim it. Missing evidence scores like
//! failing evidence: zero. Verified GPUs score by model (v6), combined with
//! the v5 (inference) score: 70 % / 30 % by default.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One GPU the verifier accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSeen {
    /// The NVIDIA-signed device identity.
    pub id: String,
    /// e.g. "H100 SXM (G520_0200_885)".
    pub model: String,
}

/// What the round learned about one node a miner listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    pub miner_uid: u16,
    /// SS58.
    #[serde(default)]
    pub miner_hotkey: String,
    /// The address the miner listed.
    pub node: String,
    /// `None`: no evidence (unreachable, timed out, malformed).
    pub accepted: Option<bool>,
    /// The CVM id, only when proven (RA-TLS): unproven ids are never compared.
    pub cvm_id: Option<String>,
    pub gpus: Vec<GpuSeen>,
    /// The miner's bid for this node (cents per GPU-hour), when it gave one.
    #[serde(default)]
    pub bid: Option<u64>,
    /// The evidence said SIMULATED.
    #[serde(default)]
    pub simulated: bool,
    /// Why it failed, in words: each failed check (`name: reason`), or why
    /// there was no evidence.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// How a node counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NodeScore {
    /// Verified and unique: its GPUs' points.
    Counted {
        points: f64,
    },
    /// Verified, but its CVM or a GPU is also claimed elsewhere.
    Duplicate {
        shared_with: Vec<String>,
    },
    /// Verified and unique, but not bought in the auction (why, in words).
    NotInAuction {
        reason: String,
    },
    Failed,
    NoEvidence,
}

impl std::fmt::Display for NodeScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeScore::Counted { points } if *points == 1.0 => write!(f, "1 point"),
            NodeScore::Counted { points } => write!(f, "{points} points"),
            NodeScore::Duplicate { shared_with } => {
                write!(f, "duplicate of {}", shared_with.join(", "))
            }
            NodeScore::NotInAuction { reason } => write!(f, "not bought: {reason}"),
            NodeScore::Failed | NodeScore::NoEvidence => write!(f, "not counted"),
        }
    }
}

/// Auction mode (Targon's target pricing): the subnet buys `target_cards`
/// GPUs; verified nodes with at least `min_cluster_size` GPUs are taken by
/// ascending bid (cents per GPU-hour, from the miner's node list; a node
/// without a bid bids `max_price`) until the target is filled, each GPU paid
/// `min(target_price × target_cards / cards bought, max_price)` and never
/// less than its bid. A miner's v6 share is its pay over `emission_pool`
/// (what the v6 share of emission is worth, cents per hour), scaled down
/// when the total is over 1; the rest of the v6 share is burned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuctionConfig {
    pub target_cards: u64,
    /// Cents per GPU-hour.
    pub target_price: u64,
    /// Cents per GPU-hour; higher bids are not taken.
    pub max_price: u64,
    pub min_cluster_size: usize,
    /// Cents per hour.
    pub emission_pool: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Share of the weights for verified confidential compute (v6)...
    pub v6_share: f64,
    /// ...and for verified inference (v5).
    pub v5_share: f64,
    /// Receives what is not earned (the v5 share until v5 scoring exists).
    pub burn_uid: u16,
    /// Points per verified GPU by model prefix ("H100", "H200", "B200").
    /// A model not listed scores zero.
    pub model_points: BTreeMap<String, f64>,
    /// Pay by auction instead of model points.
    pub auction: Option<AuctionConfig>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            v6_share: 0.7,
            v5_share: 0.3,
            burn_uid: 0,
            // The subnet's table (Targon v6: H200 2, H100 1). No subnet
            // figure exists for the B200; 3 is ours (it has about twice an
            // H100's memory and more than an H200's bandwidth). A board the
            // verifier cannot name ("unknown Hopper (…)") matches no prefix.
            model_points: BTreeMap::from([
                ("H100".to_string(), 1.0),
                ("H200".to_string(), 2.0),
                ("B200".to_string(), 3.0),
            ]),
            auction: None,
        }
    }
}

impl ScoringConfig {
    /// The price of the longest key `model` starts with ("H100 PCIe" over
    /// "H100"); 0 when none.
    pub fn points(&self, model: &str) -> f64 {
        self.model_points
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(0.0, |(_, p)| *p)
    }

    /// Every `model_points` key must be the start of a name the verifier
    /// gives, or it would silently pay nothing (the "Hopper" and
    /// "Blackwell" keys of earlier versions among them).
    pub fn validate(&self) -> Result<(), String> {
        use tvm_verifier::gpu::model::{Model, BOARDS};
        let names: Vec<String> = BOARDS.iter().map(|b| Model::Known(b).to_string()).collect();
        // An unknown board's name is "unknown Hopper (<board>)"; NVSwitches
        // are not GPUs and are never priced.
        let unknown = ["unknown Hopper (", "unknown Blackwell ("];
        for (key, points) in &self.model_points {
            if !(points.is_finite() && *points >= 0.0) {
                return Err(format!(
                    "model_points {key:?} is {points}: give a number of points, 0 or more"
                ));
            }
            let names_a_model = names.iter().any(|n| n.starts_with(key.as_str()))
                || unknown
                    .iter()
                    .any(|u| u.starts_with(key.as_str()) || key.starts_with(u));
            if key.is_empty() || !names_a_model {
                return Err(format!(
                    "model_points key {key:?} matches no GPU model, so it would pay nothing: models are named like \"H100 SXM (G520_0200_885)\", \"H200 SXM (G520_0280_895)\", \"B200 (G525_0220_886)\" (docs/gpu.md#models); use H100, H200, B200 or a full name, or \"unknown Hopper\" / \"unknown Blackwell\" for boards the verifier cannot name"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundScores {
    /// Per node, in input order.
    pub nodes: Vec<(NodeResult, NodeScore)>,
    /// v6 points per miner uid.
    pub v6: BTreeMap<u16, f64>,
    /// The weight vector: (uid, u16 weight), summing to 65535, zeros left out.
    pub weights: Vec<(u16, u16)>,
    /// Why the split is what it is, in words.
    pub notes: Vec<String>,
}

/// Score a round. `v5`: inference scores per uid when v5 scoring runs;
/// `None` burns the v5 share (said in the notes).
pub fn score(
    nodes: &[NodeResult],
    v5: Option<&BTreeMap<u16, f64>>,
    cfg: &ScoringConfig,
) -> RoundScores {
    // One miner reaching one CVM through several entries: the first counts,
    // the others repeat it (and are not duplicates of it against anyone).
    let mut first_entry: HashMap<(u16, &str), usize> = HashMap::new();
    let mut repeats: HashMap<usize, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let (Some(true), Some(c)) = (n.accepted, &n.cvm_id) {
            if let Some(&first) = first_entry.get(&(n.miner_uid, c.as_str())) {
                repeats.insert(i, first);
            } else {
                first_entry.insert((n.miner_uid, c.as_str()), i);
            }
        }
    }
    // Who claims each CVM id and GPU id, among verified nodes.
    let mut claims: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.accepted != Some(true) || repeats.contains_key(&i) {
            continue;
        }
        if let Some(c) = &n.cvm_id {
            claims.entry(format!("cvm:{c}")).or_default().push(i);
        }
        let mut ids: Vec<&str> = n.gpus.iter().map(|g| g.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            claims.entry(format!("gpu:{id}")).or_default().push(i);
        }
    }
    let mut scored = Vec::with_capacity(nodes.len());
    let mut v6: BTreeMap<u16, f64> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let s = match n.accepted {
            None => NodeScore::NoEvidence,
            Some(false) => NodeScore::Failed,
            Some(true) if repeats.contains_key(&i) => NodeScore::Duplicate {
                shared_with: vec![nodes[repeats[&i]].node.clone()],
            },
            Some(true) => {
                let mut others: Vec<String> = claims
                    .values()
                    .filter(|c| c.len() > 1 && c.contains(&i))
                    .flatten()
                    .filter(|&&j| j != i)
                    .map(|&j| nodes[j].node.clone())
                    .collect();
                // A node listing one GPU twice is its own duplicate.
                let twice = n.gpus.len() != {
                    let mut ids: Vec<&str> = n.gpus.iter().map(|g| g.id.as_str()).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids.len()
                };
                if twice {
                    others.push(n.node.clone());
                }
                others.sort();
                others.dedup();
                if others.is_empty() {
                    let points: f64 = n.gpus.iter().map(|g| cfg.points(&g.model)).sum();
                    *v6.entry(n.miner_uid).or_default() += points;
                    NodeScore::Counted { points }
                } else {
                    NodeScore::Duplicate {
                        shared_with: others,
                    }
                }
            }
        };
        scored.push((n.clone(), s));
    }
    v6.retain(|_, p| *p > 0.0);
    let mut notes = Vec::new();
    // In auction mode v6 holds each miner's fraction of the emission pool.
    let auction_burn = match &cfg.auction {
        None => None,
        Some(a) => {
            let (fractions, burn) = auction(a, cfg, &mut scored, &mut notes);
            v6 = fractions;
            Some(burn)
        }
    };

    let mut shares: BTreeMap<u16, f64> = BTreeMap::new();
    let v6_total: f64 = v6.values().sum();
    let (mut v6_share, mut v5_share) = (cfg.v6_share.max(0.0), cfg.v5_share.max(0.0));
    let total = v6_share + v5_share;
    if total > 0.0 {
        v6_share /= total;
        v5_share /= total;
    }
    if v6_total <= 0.0 {
        notes.push(
            "no v6 points this round (no node verified and unique, of a paid model, or bought): the v6 share goes to v5"
                .into(),
        );
        v5_share += v6_share;
    } else if let Some(burn) = auction_burn {
        for (uid, f) in &v6 {
            *shares.entry(*uid).or_default() += v6_share * f;
        }
        *shares.entry(cfg.burn_uid).or_default() += v6_share * burn;
    } else {
        for (uid, p) in &v6 {
            *shares.entry(*uid).or_default() += v6_share * p / v6_total;
        }
    }
    match v5.filter(|m| m.values().any(|v| *v > 0.0)) {
        Some(m) => {
            let t: f64 = m.values().filter(|v| **v > 0.0).sum();
            for (uid, v) in m.iter().filter(|(_, v)| **v > 0.0) {
                *shares.entry(*uid).or_default() += v5_share * v / t;
            }
        }
        None => {
            notes.push(format!(
                "v5 (verified inference) scoring is not implemented yet: its {:.0} % goes to the burn uid {}",
                v5_share * 100.0,
                cfg.burn_uid
            ));
            *shares.entry(cfg.burn_uid).or_default() += v5_share;
        }
    }
    RoundScores {
        nodes: scored,
        v6,
        weights: to_u16(&shares, cfg.burn_uid),
        notes,
    }
}

/// Run the auction over the counted nodes: rewrites their scores (pay in
/// cents per hour, or why not bought) and returns each miner's fraction of
/// the emission pool and the fraction left unbought (burned).
fn auction(
    a: &AuctionConfig,
    cfg: &ScoringConfig,
    scored: &mut [(NodeResult, NodeScore)],
    notes: &mut Vec<String>,
) -> (BTreeMap<u16, f64>, f64) {
    // The subnet buys the models it prices: a GPU of a model priced 0 (an
    // unknown board among them) is not a card on offer.
    let cards_of = |n: &NodeResult| n.gpus.iter().filter(|g| cfg.points(&g.model) > 0.0).count();
    let mut offers: Vec<(u64, usize)> = Vec::new();
    for (i, (n, s)) in scored.iter_mut().enumerate() {
        if !matches!(s, NodeScore::Counted { .. }) {
            continue;
        }
        let bid = n.bid.unwrap_or(a.max_price);
        let cards = cards_of(n);
        if cards < a.min_cluster_size {
            *s = NodeScore::NotInAuction {
                reason: format!(
                    "{cards} GPUs of a priced model; the auction takes nodes of at least {}",
                    a.min_cluster_size
                ),
            };
        } else if bid > a.max_price {
            *s = NodeScore::NotInAuction {
                reason: format!("bid {bid} is over the maximum price {}", a.max_price),
            };
        } else {
            offers.push((bid, i));
        }
    }
    // Lowest bids first; ties by miner and node, so the order is stable.
    offers.sort_by(|x, y| {
        let (nx, ny) = (&scored[x.1].0, &scored[y.1].0);
        (x.0, nx.miner_uid, &nx.node).cmp(&(y.0, ny.miner_uid, &ny.node))
    });
    let mut bought: Vec<(u64, usize)> = Vec::new();
    let mut cards = 0u64;
    for (bid, i) in offers {
        let n = cards_of(&scored[i].0) as u64;
        if cards.saturating_add(n) <= a.target_cards {
            cards += n;
            bought.push((bid, i));
        } else {
            // Skipped, not the end: a smaller node further on may still fit.
            scored[i].1 = NodeScore::NotInAuction {
                reason: format!(
                    "its {n} GPUs do not fit in the {} left of the {}-GPU target after lower bids",
                    a.target_cards - cards,
                    a.target_cards
                ),
            };
        }
    }
    let mut pay: BTreeMap<u16, f64> = BTreeMap::new();
    if cards > 0 {
        let pool = a.target_price as f64 * a.target_cards as f64;
        let per = (pool / cards as f64).min(a.max_price as f64);
        notes.push(format!(
            "auction: {cards} of {} GPUs bought at {per:.0} cents per GPU-hour (at least each bid)",
            a.target_cards
        ));
        for (bid, i) in bought {
            let n = &scored[i].0;
            let p = cards_of(n) as f64 * per.max(bid as f64);
            *pay.entry(n.miner_uid).or_default() += p;
            scored[i].1 = NodeScore::Counted { points: p };
        }
    }
    let pool = a.emission_pool.max(1) as f64;
    let mut fractions: BTreeMap<u16, f64> = pay.into_iter().map(|(u, p)| (u, p / pool)).collect();
    let total: f64 = fractions.values().sum();
    if total > 1.0 {
        notes.push(format!(
            "auction: pay is {:.0} % of the emission pool; scaled down to 100 %",
            total * 100.0
        ));
        fractions.values_mut().for_each(|f| *f /= total);
    }
    let burn = (1.0 - fractions.values().sum::<f64>()).max(0.0);
    (fractions, burn)
}

/// Shares (summing to 1) as u16 weights summing to 65535; rounding goes to the burn uid.
fn to_u16(shares: &BTreeMap<u16, f64>, burn: u16) -> Vec<(u16, u16)> {
    let total: f64 = shares.values().sum();
    if total <= 0.0 {
        return vec![(burn, u16::MAX)];
    }
    let mut out: BTreeMap<u16, u32> = shares
        .iter()
        .map(|(u, s)| (*u, (f64::from(u16::MAX) * s / total).floor() as u32))
        .collect();
    let sum: u32 = out.values().sum();
    *out.entry(burn).or_default() += u32::from(u16::MAX).saturating_sub(sum);
    out.into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(u, w)| (u, w.min(u32::from(u16::MAX)) as u16))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        uid: u16,
        name: &str,
        accepted: Option<bool>,
        cvm: &str,
        gpus: &[(&str, &str)],
    ) -> NodeResult {
        NodeResult {
            miner_uid: uid,
            miner_hotkey: String::new(),
            node: name.into(),
            accepted,
            bid: None,
            simulated: false,
            reasons: Vec::new(),
            cvm_id: Some(cvm.into()),
            gpus: gpus
                .iter()
                .map(|(id, m)| GpuSeen {
                    id: (*id).into(),
                    model: (*m).into(),
                })
                .collect(),
        }
    }

    const H100: &str = "H100 SXM (G520_0200_885)";
    const H200: &str = "H200";

    #[test]
    fn each_gpu_counts_once_and_duplicates_score_zero_for_all_claimants() {
        let nodes = vec![
            node(1, "a", Some(true), "c1", &[("g1", H100), ("g2", H100)]),
            node(2, "b", Some(true), "c2", &[("g3", H200)]),
            // Relays c1's GPU g1 under another CVM: both lose.
            node(3, "c", Some(true), "c3", &[("g1", H100)]),
            // Same proven CVM answering two miners: both lose.
            node(4, "d", Some(true), "c4", &[("g5", H100)]),
            node(5, "e", Some(true), "c4", &[("g6", H100)]),
            // One miner reaching its CVM through two entries: counted once.
            node(8, "h", Some(true), "c8", &[("g8", H100)]),
            node(8, "h2", Some(true), "c8", &[("g8", H100)]),
            // An unproven id (plain HTTP) is never compared: no one is zeroed by it.
            NodeResult {
                cvm_id: None,
                ..node(9, "i", Some(true), "", &[("g9", H100)])
            },
            NodeResult {
                cvm_id: None,
                ..node(9, "i2", Some(true), "", &[("g10", H100)])
            },
            node(6, "f", Some(false), "c6", &[]),
            node(7, "g", None, "c7", &[]),
        ];
        let r = score(&nodes, None, &ScoringConfig::default());
        let outcome = |i: usize| r.nodes[i].1.clone();
        assert!(
            matches!(outcome(0), NodeScore::Duplicate { ref shared_with } if shared_with == &["c".to_string()])
        );
        assert_eq!(outcome(1), NodeScore::Counted { points: 2.0 });
        assert!(matches!(outcome(2), NodeScore::Duplicate { .. }));
        assert!(matches!(outcome(3), NodeScore::Duplicate { .. }));
        assert!(matches!(outcome(4), NodeScore::Duplicate { .. }));
        assert_eq!(outcome(5), NodeScore::Counted { points: 1.0 });
        assert!(
            matches!(outcome(6), NodeScore::Duplicate { ref shared_with } if shared_with == &["h".to_string()])
        );
        assert_eq!(outcome(7), NodeScore::Counted { points: 1.0 });
        assert_eq!(outcome(8), NodeScore::Counted { points: 1.0 });
        assert_eq!(outcome(9), NodeScore::Failed);
        assert_eq!(outcome(10), NodeScore::NoEvidence);
        assert_eq!(r.v6, BTreeMap::from([(2, 2.0), (8, 1.0), (9, 2.0)]));
        // 70 % to uids 2, 8, 9 (2:1:2), 30 % burned (no v5 yet), summing to 65535.
        assert_eq!(
            r.weights,
            vec![(0, 19663), (2, 18349), (8, 9174), (9, 18349)]
        );
        assert_eq!(
            r.weights.iter().map(|(_, w)| u32::from(*w)).sum::<u32>(),
            65535
        );
        assert!(r.notes.iter().any(|n| n.contains("not implemented yet")));
    }

    #[test]
    fn all_to_v5_until_a_node_passes_and_v5_scores_split_when_present() {
        let failed = vec![node(1, "a", Some(false), "c1", &[])];
        let r = score(&failed, None, &ScoringConfig::default());
        assert_eq!(
            r.weights,
            vec![(0, 65535)],
            "everything burned: no v6, no v5"
        );
        let v5 = BTreeMap::from([(3, 1.0), (4, 3.0)]);
        let r = score(&failed, Some(&v5), &ScoringConfig::default());
        assert_eq!(r.weights, vec![(0, 1), (3, 16383), (4, 49151)]);
        let ok = vec![
            node(1, "a", Some(true), "c1", &[("g1", H100)]),
            node(2, "b", Some(true), "c2", &[("g2", H200)]),
        ];
        let r = score(&ok, Some(&v5), &ScoringConfig::default());
        let w: BTreeMap<u16, u16> = r.weights.into_iter().collect();
        assert_eq!(w[&1], (65535.0 * 0.7 / 3.0) as u16);
        assert_eq!(w[&2], (65535.0 * 0.7 * 2.0 / 3.0) as u16);
        assert_eq!(w[&4], (65535.0 * 0.3 * 0.75) as u16);
    }

    #[test]
    fn models_by_the_subnet_table_and_unknown_boards_score_zero() {
        let one = |model: &str| vec![node(1, "a", Some(true), "c1", &[("g1", model)])];
        let cfg = ScoringConfig::default();
        assert_eq!(
            score(&one("H200 SXM (G520_0280_895)"), None, &cfg).v6[&1],
            2.0
        );
        assert_eq!(score(&one("B200 (G525_0220_886)"), None, &cfg).v6[&1], 3.0);
        assert_eq!(
            score(&one("H100 PCIe (1010_0200_882)"), None, &cfg).v6[&1],
            1.0
        );
        // A board the verifier does not name is not paid as another model.
        let nodes = one("unknown Hopper (G520_0299_899)");
        assert!(score(&nodes, None, &cfg).v6.is_empty());
        let mut cfg = ScoringConfig::default();
        cfg.model_points.insert("unknown Hopper".into(), 0.5);
        assert_eq!(score(&nodes, None, &cfg).v6, BTreeMap::from([(1, 0.5)]));
        let twice = vec![node(
            1,
            "a",
            Some(true),
            "c1",
            &[("g1", H100), ("g1", H100)],
        )];
        assert!(matches!(
            score(&twice, None, &cfg).nodes[0].1,
            NodeScore::Duplicate { .. }
        ));
    }

    #[test]
    fn every_named_board_has_its_default_price_and_the_longest_key_wins() {
        use tvm_verifier::gpu::model::{Model, BOARDS};
        let cfg = ScoringConfig::default();
        for b in BOARDS {
            let expect = match b.name {
                "H100 PCIe" | "H100 NVL" | "H100 SXM" => 1.0,
                "H200 SXM" | "H200 NVL" => 2.0,
                "B200" => 3.0,
                "H800 SXM" => 0.0,
                other => panic!("{other}: give the new board its default price here"),
            };
            assert_eq!(cfg.points(&Model::Known(b).to_string()), expect, "{b:?}");
        }
        let mut cfg = ScoringConfig::default();
        cfg.model_points.insert("H100 PCIe".into(), 0.6);
        assert_eq!(cfg.points("H100 PCIe (1010_0200_882)"), 0.6);
        assert_eq!(cfg.points("H100 SXM (G520_0200_885)"), 1.0);
    }

    #[test]
    fn model_points_keys_must_name_a_model() {
        assert_eq!(ScoringConfig::default().validate(), Ok(()));
        for (key, ok) in [
            ("Hopper", false),
            ("Blackwell", false),
            ("", false),
            ("H1", true),
            ("H200 SXM (G520_0280_895)", true),
            ("unknown Blackwell", true),
            ("unknown Hopper (G520_0202_885)", true),
            ("NVSwitch", false),
        ] {
            let mut cfg = ScoringConfig::default();
            cfg.model_points.insert(key.into(), 1.0);
            let r = cfg.validate();
            assert_eq!(r.is_ok(), ok, "{key:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("matches no GPU model"), "{e}");
            }
        }
        let mut cfg = ScoringConfig::default();
        cfg.model_points.insert("H100".into(), f64::NAN);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn auction_buys_lowest_bids_up_to_the_target_and_burns_the_rest() {
        let bid = |mut n: NodeResult, b: Option<u64>| {
            n.bid = b;
            n
        };
        let gpus = |k: usize, tag: &str| -> Vec<(String, &'static str)> {
            (0..k).map(|i| (format!("{tag}{i}"), H100)).collect()
        };
        let mk = |uid, name: &str, k, b| {
            let g = gpus(k, name);
            let g: Vec<(&str, &str)> = g.iter().map(|(a, m)| (a.as_str(), *m)).collect();
            bid(node(uid, name, Some(true), name, &g), b)
        };
        let nodes = vec![
            mk(1, "a", 8, Some(200)),
            mk(2, "b", 8, Some(150)),
            mk(3, "c", 8, Some(300)), // the target (16) is full before it
            mk(4, "d", 2, Some(100)), // too small a cluster
            mk(5, "e", 8, Some(900)), // over the maximum
        ];
        let cfg = ScoringConfig {
            auction: Some(AuctionConfig {
                target_cards: 16,
                target_price: 250,
                max_price: 400,
                min_cluster_size: 4,
                emission_pool: 10_000,
            }),
            ..ScoringConfig::default()
        };
        // Boards the verifier cannot name are not cards on offer, however cheap.
        let unknown: Vec<(String, &str)> = (0..8)
            .map(|i| (format!("u{i}"), "unknown Hopper (G520_0299_899)"))
            .collect();
        let unknown: Vec<(&str, &str)> = unknown.iter().map(|(a, m)| (a.as_str(), *m)).collect();
        let cheap_unknown = bid(node(6, "f", Some(true), "f", &unknown), Some(1));
        let r = score(&[cheap_unknown], None, &cfg);
        assert!(
            matches!(&r.nodes[0].1, NodeScore::NotInAuction { reason } if reason.starts_with("0 GPUs of a priced model")),
            "{:?}",
            r.nodes[0].1
        );
        let r = score(&nodes, None, &cfg);
        // 16 GPUs bought at 250 cents each: 4000 of 10000 cents per hour each.
        assert_eq!(r.nodes[0].1, NodeScore::Counted { points: 2000.0 });
        assert_eq!(r.nodes[1].1, NodeScore::Counted { points: 2000.0 });
        for i in [2, 3, 4] {
            assert!(
                matches!(r.nodes[i].1, NodeScore::NotInAuction { .. }),
                "{:?}",
                r.nodes[i].1
            );
        }
        assert_eq!(r.v6, BTreeMap::from([(1, 0.2), (2, 0.2)]));
        // 70 % × 0.2 each; the unbought 60 % of v6 and all of v5 burned.
        let w: BTreeMap<u16, u16> = r.weights.iter().copied().collect();
        assert_eq!(w[&1], (65535.0 * 0.14) as u16);
        assert_eq!(w[&2], (65535.0 * 0.14) as u16);
        assert_eq!(
            u32::from(w[&0]) + u32::from(w[&1]) + u32::from(w[&2]),
            65535
        );

        // Pay over the pool is scaled down to it: nothing burned from v6.
        let mut small = cfg.clone();
        if let Some(a) = small.auction.as_mut() {
            a.emission_pool = 1000;
        }
        let r = score(&nodes, None, &small);
        assert_eq!(r.v6, BTreeMap::from([(1, 0.5), (2, 0.5)]));
        assert!(r.notes.iter().any(|n| n.contains("scaled down")));
    }
}
