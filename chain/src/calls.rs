//! The calls tvm sends, addressed by name and resolved against the runtime
//! metadata at hand (pallet and call indices move between runtimes; never
//! hard-code them).

use subxt::Metadata;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the runtime has no pallet {0}: is this a subtensor node?")]
    NoPallet(String),
    #[error("pallet {pallet} has no call {call}: the runtime changed; update tvm")]
    NoCall { pallet: String, call: String },
}

/// Where a call sits in this runtime: `[pallet index, call index]`, the first
/// two bytes of its call data.
pub fn call_index(md: &Metadata, pallet: &str, call: &str) -> Result<[u8; 2], CallError> {
    let p = md
        .pallet_by_name(pallet)
        .ok_or_else(|| CallError::NoPallet(pallet.to_string()))?;
    let c = p
        .call_variant_by_name(call)
        .ok_or_else(|| CallError::NoCall {
            pallet: pallet.to_string(),
            call: call.to_string(),
        })?;
    Ok([p.call_index(), c.index])
}

/// The argument names of a call, in order (to check a runtime still takes
/// what we send).
pub fn call_fields(md: &Metadata, pallet: &str, call: &str) -> Result<Vec<String>, CallError> {
    let p = md
        .pallet_by_name(pallet)
        .ok_or_else(|| CallError::NoPallet(pallet.to_string()))?;
    let c = p
        .call_variant_by_name(call)
        .ok_or_else(|| CallError::NoCall {
            pallet: pallet.to_string(),
            call: call.to_string(),
        })?;
    Ok(c.fields.iter().filter_map(|f| f.name.clone()).collect())
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
        assert!(matches!(
            call_index(&md, "Nope", "x"),
            Err(CallError::NoPallet(_))
        ));
        assert!(matches!(
            call_index(&md, "SubtensorModule", "nope"),
            Err(CallError::NoCall { .. })
        ));
    }
}
