//! The miner's node list, served at `GET /cvm`: `[{"ip": "...", "price": N}]`,
//! or the legacy `["ip", ...]` that older miners still send.

use serde::{Deserialize, Serialize};

/// One CVM a miner reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Address as the miner listed it (an IP, possibly `ip:port` or a URL in old lists).
    pub ip: String,
    /// Bid in US cents per GPU per hour; absent in legacy lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyEntry {
    Legacy(String),
    Bid(NodeEntry),
}

#[derive(Debug, thiserror::Error)]
pub enum NodeListError {
    #[error("node list is not a JSON array of {{ip, price}} objects or of strings: {0}")]
    Malformed(String),
    #[error("node {index} has an empty address")]
    EmptyAddress { index: usize },
    #[error("node list has {0} entries; at most {MAX_NODES} are read")]
    TooMany(usize),
}

/// No miner runs more CVMs than this behind one hotkey; bounds validator work.
pub const MAX_NODES: usize = 4096;

/// Parse a `/cvm` body in either format.
pub fn parse_node_list(body: &[u8]) -> Result<Vec<NodeEntry>, NodeListError> {
    let raw: Vec<AnyEntry> =
        serde_json::from_slice(body).map_err(|e| NodeListError::Malformed(e.to_string()))?;
    if raw.len() > MAX_NODES {
        return Err(NodeListError::TooMany(raw.len()));
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, e)| {
            let entry = match e {
                AnyEntry::Legacy(ip) => NodeEntry { ip, price: None },
                AnyEntry::Bid(n) => n,
            };
            if entry.host().is_empty() {
                return Err(NodeListError::EmptyAddress { index });
            }
            Ok(entry)
        })
        .collect()
}

impl NodeEntry {
    /// The bare host: scheme, path and port removed (`[v6]` brackets kept off),
    /// the way Targon's validator normalises before trying ports 8080 then 8980.
    pub fn host(&self) -> &str {
        let s = self.ip.trim();
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        let s = s.split('/').next().unwrap_or(s);
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        // One colon is host:port; several means a bare IPv6 address.
        match s.matches(':').count() {
            1 => s.split(':').next().unwrap_or(s),
            _ => s,
        }
    }
}

impl NodeEntry {
    /// What is actually called, in one spelling: the host as a canonical IP
    /// address (`::ffff:1.2.3.4` is `1.2.3.4`), or a lowercased name. A list
    /// that spells one host many ways (`1.2.3.4`, `1.2.3.4:1`,
    /// `http://1.2.3.4/a`) names one node.
    pub fn address(&self) -> String {
        let host = self.host();
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().to_string(),
            Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let bids = parse_node_list(br#"[{"ip":"1.2.3.4","price":250},{"ip":"5.6.7.8"}]"#).unwrap();
        assert_eq!(
            bids[0],
            NodeEntry {
                ip: "1.2.3.4".into(),
                price: Some(250)
            }
        );
        assert_eq!(bids[1].price, None);
        let legacy = parse_node_list(br#"["1.2.3.4:8080","http://5.6.7.8"]"#).unwrap();
        assert_eq!(legacy[0].host(), "1.2.3.4");
        assert_eq!(legacy[1].host(), "5.6.7.8");
        assert_eq!(
            serde_json::to_string(&bids[..1]).unwrap(),
            r#"[{"ip":"1.2.3.4","price":250}]"#
        );
    }

    #[test]
    fn hosts() {
        let h = |s: &str| {
            NodeEntry {
                ip: s.into(),
                price: None,
            }
            .host()
            .to_string()
        };
        assert_eq!(h("https://[::1]:8080/x"), "::1");
        assert_eq!(h("::1"), "::1");
        assert_eq!(h(" 10.0.0.1 "), "10.0.0.1");
    }

    #[test]
    fn one_host_many_spellings_is_one_address() {
        let a = |s: &str| {
            NodeEntry {
                ip: s.into(),
                price: None,
            }
            .address()
        };
        for s in [
            "1.2.3.4",
            "1.2.3.4:1",
            "http://1.2.3.4/a",
            "https://1.2.3.4:8080/x/y",
            " 1.2.3.4 ",
            "::ffff:1.2.3.4",
            "[::ffff:102:304]:9",
        ] {
            assert_eq!(a(s), "1.2.3.4", "{s}");
        }
        assert_eq!(a("[2001:DB8::0:1]:80"), "2001:db8::1");
        assert_eq!(a("Node.Example."), "node.example");
        assert_ne!(a("1.2.3.5"), a("1.2.3.4"));
    }

    #[test]
    fn bad_lists() {
        for bad in [
            &b"{}"[..],
            b"[1]",
            br#"[{"ip":"a","price":-1}]"#,
            br#"[{"ip":"a","extra":1}]"#,
            b"nope",
        ] {
            assert!(
                matches!(parse_node_list(bad), Err(NodeListError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_node_list(br#"["http://"]"#),
            Err(NodeListError::EmptyAddress { index: 0 })
        ));
    }
}
