//! The calls tvm sends, addressed by name and resolved against the runtime
//! metadata at hand (pallet and call indices move between runtimes; never
//! hard-code them).

use parity_scale_codec::Encode;
use subxt::Metadata;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the runtime has no pallet {0}: is this a subtensor node?")]
    NoPallet(String),
    #[error("pallet {pallet} has no call {call}: the runtime changed; update tvm")]
    NoCall { pallet: String, call: String },
}

/// A call's pallet index and its variant in this runtime.
fn lookup<'m>(
    md: &'m Metadata,
    pallet: &str,
    call: &str,
) -> Result<(u8, &'m scale_info::Variant<scale_info::form::PortableForm>), CallError> {
    let p = md
        .pallet_by_name(pallet)
        .ok_or_else(|| CallError::NoPallet(pallet.to_string()))?;
    let c = p
        .call_variant_by_name(call)
        .ok_or_else(|| CallError::NoCall {
            pallet: pallet.to_string(),
            call: call.to_string(),
        })?;
    Ok((p.call_index(), c))
}

/// Where a call sits in this runtime: `[pallet index, call index]`, the first
/// two bytes of its call data.
pub fn call_index(md: &Metadata, pallet: &str, call: &str) -> Result<[u8; 2], CallError> {
    let (p, c) = lookup(md, pallet, call)?;
    Ok([p, c.index])
}

/// The argument names of a call, in order (to check a runtime still takes
/// what we send).
pub fn call_fields(md: &Metadata, pallet: &str, call: &str) -> Result<Vec<String>, CallError> {
    let (_, c) = lookup(md, pallet, call)?;
    Ok(c.fields.iter().filter_map(|f| f.name.clone()).collect())
}

/// `SubtensorModule::set_weights(netuid, dests, weights, version_key)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct SetWeights {
    pub netuid: u16,
    pub dests: Vec<u16>,
    pub weights: Vec<u16>,
    pub version_key: u64,
}

/// `SubtensorModule::serve_axon(netuid, version, ip, port, ip_type, protocol, placeholder1, placeholder2)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct ServeAxon {
    pub netuid: u16,
    pub version: u32,
    /// IPv4 or IPv6 as a number (IPv4 in the low 32 bits).
    pub ip: u128,
    pub port: u16,
    /// 4 or 6.
    pub ip_type: u8,
    pub protocol: u8,
    pub placeholder1: u8,
    pub placeholder2: u8,
}

/// `SubtensorModule::commit_timelocked_weights(netuid, commit, reveal_round,
/// commit_reveal_version)`: weights encrypted to a drand round
/// ([`crate::drand`]), revealed by the chain itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct CommitTimelockedWeights {
    pub netuid: u16,
    pub commit: Vec<u8>,
    pub reveal_round: u64,
    pub commit_reveal_version: u16,
}

/// A call tvm knows how to encode.
pub trait Call: Encode {
    const PALLET: &'static str;
    const NAME: &'static str;

    /// Call data for this runtime: its indices, then the SCALE fields.
    fn call_data(&self, md: &Metadata) -> Result<Vec<u8>, CallError> {
        let mut out = call_index(md, Self::PALLET, Self::NAME)?.to_vec();
        self.encode_to(&mut out);
        Ok(out)
    }
}

impl Call for SetWeights {
    const PALLET: &'static str = "SubtensorModule";
    const NAME: &'static str = "set_weights";
}

impl Call for CommitTimelockedWeights {
    const PALLET: &'static str = "SubtensorModule";
    const NAME: &'static str = "commit_timelocked_weights";
}

impl Call for ServeAxon {
    const PALLET: &'static str = "SubtensorModule";
    const NAME: &'static str = "serve_axon";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finney_places_the_calls_where_its_sources_say() {
        let md = crate::metadata::finney().unwrap();
        assert_eq!(
            call_index(&md, "SubtensorModule", "set_weights").unwrap(),
            [7, 0]
        );
        assert_eq!(
            call_index(&md, "SubtensorModule", "serve_axon").unwrap(),
            [7, 4]
        );
        assert_eq!(
            call_fields(&md, "SubtensorModule", "set_weights").unwrap(),
            ["netuid", "dests", "weights", "version_key"]
        );
        assert_eq!(
            call_fields(&md, "SubtensorModule", "commit_timelocked_weights").unwrap(),
            ["netuid", "commit", "reveal_round", "commit_reveal_version"]
        );
        assert!(matches!(
            call_index(&md, "Nope", "x"),
            Err(CallError::NoPallet(_))
        ));
        assert!(matches!(
            call_index(&md, "SubtensorModule", "nope"),
            Err(CallError::NoCall { .. })
        ));
    }

    /// Our call bytes equal those subxt's encoder makes from the metadata's
    /// own type information for the same values.
    #[test]
    fn call_data_matches_subxt_from_the_same_metadata() {
        use subxt::dynamic::Value;
        use subxt::ext::frame_decode::extrinsics::encode_call_data;
        let md = crate::metadata::finney().unwrap();
        let sw = SetWeights {
            netuid: 4,
            dests: vec![0, 7, 65535],
            weights: vec![65535, 1, 0],
            version_key: 1_000_000_007,
        };
        let u16s = |v: &[u16]| Value::unnamed_composite(v.iter().map(|x| Value::u128(*x as u128)));
        let fields = vec![
            Value::u128(4),
            u16s(&sw.dests),
            u16s(&sw.weights),
            Value::u128(sw.version_key as u128),
        ];
        let theirs =
            encode_call_data("SubtensorModule", "set_weights", &fields, &md, md.types()).unwrap();
        assert_eq!(sw.call_data(&md).unwrap(), theirs);

        let sa = ServeAxon {
            netuid: 4,
            version: 1,
            ip: u32::from(std::net::Ipv4Addr::new(203, 0, 113, 9)) as u128,
            port: 7777,
            ip_type: 4,
            protocol: 4,
            placeholder1: 0,
            placeholder2: 0,
        };
        let fields = vec![
            Value::u128(4),
            Value::u128(1),
            Value::u128(sa.ip),
            Value::u128(7777),
            Value::u128(4),
            Value::u128(4),
            Value::u128(0),
            Value::u128(0),
        ];
        let theirs =
            encode_call_data("SubtensorModule", "serve_axon", &fields, &md, md.types()).unwrap();
        assert_eq!(sa.call_data(&md).unwrap(), theirs);

        let ct = CommitTimelockedWeights {
            netuid: 4,
            commit: vec![1, 2, 3, 250],
            reveal_round: 23_456_789,
            commit_reveal_version: 4,
        };
        let fields = vec![
            Value::u128(4),
            Value::unnamed_composite(ct.commit.iter().map(|b| Value::u128(*b as u128))),
            Value::u128(ct.reveal_round as u128),
            Value::u128(4),
        ];
        let theirs = encode_call_data(
            "SubtensorModule",
            "commit_timelocked_weights",
            &fields,
            &md,
            md.types(),
        )
        .unwrap();
        assert_eq!(ct.call_data(&md).unwrap(), theirs);
        assert_eq!(&theirs[..2], [7, 113]);
    }
}
