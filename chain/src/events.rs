//! Dispatch results as the chain reports them: `System.Events` records
//! `ExtrinsicSuccess` / `ExtrinsicFailed` with the extrinsic's index in its
//! block. Both directions go through the runtime's own type information
//! (scale-value): the client reads subtensor's events, and the test chain
//! writes the same bytes subtensor would.

use scale_info::form::PortableForm;
use subxt::ext::scale_value::{self, Composite, Value, ValueDef};
use subxt::Metadata;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("the runtime has no System.Events storage")]
    NoEvents,
    #[error("cannot encode events: {0}")]
    Encode(String),
    #[error("cannot decode the block's events: {0}")]
    Decode(String),
}

/// The storage key of `System.Events` (a plain value).
pub fn key() -> [u8; 32] {
    subxt::ext::frame_decode::storage::encode_storage_key_prefix("System", "Events")
}

fn events_ty(md: &Metadata) -> Result<u32, EventsError> {
    md.pallet_by_name("System")
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name("Events"))
        .map(|e| e.value_ty())
        .ok_or(EventsError::NoEvents)
}

/// How one extrinsic ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    Success,
    /// `Pallet.Error`, e.g. `SubtensorModule.SettingWeightsTooFast`, or the
    /// variant of a non-module dispatch error (`BadOrigin`, …).
    Failed(String),
}

fn find_error_index(md: &Metadata, pallet: &str, error: &str) -> Option<(u8, u8)> {
    let p = md.pallet_by_name(pallet)?;
    let ty = p.error_ty_id()?;
    let scale_info::TypeDef::Variant(v) = &md.types().resolve(ty)?.type_def else {
        return None;
    };
    let var = v.variants.iter().find(|x| x.name == error)?;
    Some((p.error_index(), var.index))
}

/// Encode `System.Events` for a block whose extrinsics ended as `outcomes`
/// (index in block, and `None` for success or `Some("Pallet.Error")`).
pub fn encode(md: &Metadata, outcomes: &[(u32, Option<String>)]) -> Result<Vec<u8>, EventsError> {
    let info = || {
        Value::named_composite([
            (
                "weight",
                Value::named_composite([
                    ("ref_time", Value::u128(0)),
                    ("proof_size", Value::u128(0)),
                ]),
            ),
            ("class", Value::unnamed_variant("Normal", [])),
            ("pays_fee", Value::unnamed_variant("Yes", [])),
        ])
    };
    let mut records = Vec::new();
    for (index, outcome) in outcomes {
        let event = match outcome {
            None => Value::named_variant("ExtrinsicSuccess", [("dispatch_info", info())]),
            Some(name) => {
                let (pallet, error) = name.split_once('.').unwrap_or(("", name.as_str()));
                // A name the runtime does not know is reported as `Other`
                // rather than losing the whole block's events.
                let dispatch_error = match find_error_index(md, pallet, error) {
                    Some((pi, ei)) => {
                        let module = Value::named_composite([
                            ("index", Value::u128(u128::from(pi))),
                            (
                                "error",
                                Value::unnamed_composite(
                                    [ei, 0, 0, 0].map(|b| Value::u128(u128::from(b))),
                                ),
                            ),
                        ]);
                        Value::unnamed_variant("Module", [module])
                    }
                    None => Value::unnamed_variant("Other", []),
                };
                Value::named_variant(
                    "ExtrinsicFailed",
                    [
                        ("dispatch_error", dispatch_error),
                        ("dispatch_info", info()),
                    ],
                )
            }
        };
        records.push(Value::named_composite([
            (
                "phase",
                Value::unnamed_variant("ApplyExtrinsic", [Value::u128(u128::from(*index))]),
            ),
            ("event", Value::unnamed_variant("System", [event])),
            ("topics", Value::unnamed_composite([])),
        ]));
    }
    let mut out = Vec::new();
    scale_value::scale::encode_as_type(
        &Value::unnamed_composite(records),
        events_ty(md)?,
        md.types(),
        &mut out,
    )
    .map_err(|e| EventsError::Encode(e.to_string()))?;
    Ok(out)
}

fn variant(v: &Value<u32>) -> Option<(&str, &Composite<u32>)> {
    match &v.value {
        ValueDef::Variant(x) => Some((x.name.as_str(), &x.values)),
        _ => None,
    }
}

fn field<'a>(c: &'a Composite<u32>, name: &str) -> Option<&'a Value<u32>> {
    match c {
        Composite::Named(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        Composite::Unnamed(_) => None,
    }
}

fn first(c: &Composite<u32>) -> Option<&Value<u32>> {
    c.values().next()
}

/// How the extrinsic at `index` of the block ended, if the events say.
pub fn dispatch_of(
    md: &Metadata,
    events: &[u8],
    index: u32,
) -> Result<Option<Dispatch>, EventsError> {
    let v = scale_value::scale::decode_as_type(&mut &events[..], events_ty(md)?, md.types())
        .map_err(|e| EventsError::Decode(e.to_string()))?;
    let ValueDef::Composite(records) = &v.value else {
        return Err(EventsError::Decode("events are not a list".into()));
    };
    for r in records.values() {
        let ValueDef::Composite(r) = &r.value else {
            continue;
        };
        let phase = field(r, "phase").and_then(variant);
        let at = match phase {
            Some(("ApplyExtrinsic", c)) => first(c).and_then(Value::as_u128),
            _ => None,
        };
        if at != Some(u128::from(index)) {
            continue;
        }
        let Some(("System", c)) = field(r, "event").and_then(variant) else {
            continue;
        };
        match first(c).and_then(variant) {
            Some(("ExtrinsicSuccess", _)) => return Ok(Some(Dispatch::Success)),
            Some(("ExtrinsicFailed", f)) => {
                let name = match field(f, "dispatch_error").and_then(variant) {
                    Some(("Module", m)) => module_error_name(md, first(m)),
                    Some((other, _)) => other.to_string(),
                    None => "unknown dispatch error".to_string(),
                };
                return Ok(Some(Dispatch::Failed(name)));
            }
            _ => continue,
        }
    }
    Ok(None)
}

fn module_error_name(md: &Metadata, m: Option<&Value<u32>>) -> String {
    let fallback = "a module error".to_string();
    let Some(ValueDef::Composite(m)) = m.map(|v| &v.value) else {
        return fallback;
    };
    let index = field(m, "index").and_then(Value::as_u128);
    let error = field(m, "error").and_then(|e| match &e.value {
        ValueDef::Composite(c) => first(c).and_then(Value::as_u128),
        _ => None,
    });
    let (Some(pi), Some(ei)) = (index, error) else {
        return fallback;
    };
    let Some(p) = md.pallet_by_error_index(pi as u8) else {
        return format!("error {ei} of pallet {pi}");
    };
    let name = p
        .error_variant_by_index(ei as u8)
        .map(|v: &scale_info::Variant<PortableForm>| v.name.clone())
        .unwrap_or_else(|| format!("error {ei}"));
    format!("{}.{name}", p.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_runtime_types() {
        let md = crate::metadata::finney().unwrap();
        let bytes = encode(
            &md,
            &[
                (0, None),
                (1, Some("SubtensorModule.SettingWeightsTooFast".into())),
                (2, Some("SubtensorModule.NeuronNoValidatorPermit".into())),
            ],
        )
        .unwrap();
        assert_eq!(
            dispatch_of(&md, &bytes, 0).unwrap(),
            Some(Dispatch::Success)
        );
        assert_eq!(
            dispatch_of(&md, &bytes, 1).unwrap(),
            Some(Dispatch::Failed(
                "SubtensorModule.SettingWeightsTooFast".into()
            ))
        );
        assert_eq!(
            dispatch_of(&md, &bytes, 2).unwrap(),
            Some(Dispatch::Failed(
                "SubtensorModule.NeuronNoValidatorPermit".into()
            ))
        );
        assert_eq!(dispatch_of(&md, &bytes, 3).unwrap(), None);
        assert!(dispatch_of(&md, &bytes[..bytes.len() - 2], 0).is_err());
        let other = encode(&md, &[(0, Some("SubtensorModule.NoSuchError".into()))]).unwrap();
        assert_eq!(
            dispatch_of(&md, &other, 0).unwrap(),
            Some(Dispatch::Failed("Other".into()))
        );
    }
}
