//! The miner's settings, the one input the host gives the guest that the
//! image does not measure: which hotkey the agent answers for and which
//! validators may ask. It arrives as QEMU fw_cfg `opt/tvm/miner` (`tvm
//! launch --miner-config`). Nothing else can be set this way. The agent
//! records the hotkey and the access mode with the rest of its
//! configuration digest in RTMR3 (TDX) or report_data (SEV-SNP); the list of
//! validators is its allowlist file, whose path (not contents) is recorded.
//!
//! ```text
//! hotkey=5F...           the miner's hotkey (SS58), required
//! validators=5G...,5H... validator hotkeys allowed to ask (the allowlist)
//! allow=any-signer       instead of validators: any signed request
//! ```

/// Who may ask the agent for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Validators(Vec<String>),
    AnySigner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinerConfig {
    pub hotkey: String,
    pub access: Access,
}

/// fw_cfg items are small; anything larger is not a miner config.
pub const MAX_BYTES: usize = 64 * 1024;

/// An SS58 address as the agent will check it: base58 characters, 46 to
/// 48 of them (the agent decodes and checks the checksum itself).
fn ss58_shaped(s: &str) -> bool {
    (46..=48).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}

pub fn parse(text: &str) -> Result<MinerConfig, String> {
    if text.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let (mut hotkey, mut validators, mut any) = (None, None, false);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not key=value", n + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "hotkey" if hotkey.is_none() => {
                if !ss58_shaped(value) {
                    return Err(format!("line {}: hotkey is not an SS58 address", n + 1));
                }
                hotkey = Some(value.to_string());
            }
            "validators" if validators.is_none() => {
                let list: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = list.iter().find(|v| !ss58_shaped(v)) {
                    return Err(format!(
                        "line {}: validator {bad:?} is not an SS58 address",
                        n + 1
                    ));
                }
                if list.is_empty() {
                    return Err(format!("line {}: validators lists no hotkey", n + 1));
                }
                validators = Some(list);
            }
            "allow" if !any => {
                if value != "any-signer" {
                    return Err(format!(
                        "line {}: allow must be any-signer (or list validators=)",
                        n + 1
                    ));
                }
                any = true;
            }
            "hotkey" | "validators" | "allow" => {
                return Err(format!("line {}: {key} given twice", n + 1))
            }
            other => {
                return Err(format!(
                "line {}: {other:?} cannot be set from the host (only hotkey, validators, allow)",
                n + 1
            ))
            }
        }
    }
    let hotkey = hotkey.ok_or("no hotkey= line")?;
    let access = match (validators, any) {
        (Some(v), false) => Access::Validators(v),
        (None, true) => Access::AnySigner,
        (Some(_), true) => return Err("validators= and allow=any-signer both given".into()),
        (None, false) => {
            return Err("say who may ask: validators=<SS58,...> or allow=any-signer".into())
        }
    };
    Ok(MinerConfig { hotkey, access })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    const BOB: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";

    #[test]
    fn reads_hotkey_and_access() {
        let c = parse(&format!(
            "# miner\nhotkey={ALICE}\nvalidators = {BOB}, {ALICE}\n"
        ))
        .unwrap();
        assert_eq!(c.hotkey, ALICE);
        assert_eq!(c.access, Access::Validators(vec![BOB.into(), ALICE.into()]));
        let c = parse(&format!("hotkey={ALICE}\nallow=any-signer")).unwrap();
        assert_eq!(c.access, Access::AnySigner);
    }

    #[test]
    fn refuses_anything_else() {
        for (text, why) in [
            (String::new(), "no hotkey"),
            (format!("hotkey={ALICE}"), "say who may ask"),
            (
                format!("hotkey={ALICE}\nhotkey={BOB}\nallow=any-signer"),
                "twice",
            ),
            ("hotkey=root\nallow=any-signer".to_string(), "not an SS58"),
            (format!("hotkey={ALICE}\nvalidators=x"), "not an SS58"),
            (format!("hotkey={ALICE}\nvalidators=,"), "lists no hotkey"),
            (format!("hotkey={ALICE}\nallow=all"), "any-signer"),
            (
                format!("hotkey={ALICE}\nallow=any-signer\nvalidators={BOB}"),
                "both",
            ),
            (
                format!("hotkey={ALICE}\nallow=any-signer\nupstream=http://evil"),
                "cannot be set from the host",
            ),
            (format!("hotkey {ALICE}"), "not key=value"),
            ("x".repeat(MAX_BYTES + 1), "larger than"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
