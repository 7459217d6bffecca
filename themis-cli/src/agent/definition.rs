//! A service definition: the one type behind the body of `PUT /v1/services/{name}`, a
//! `[[service]]` table of the configuration file (`themis node --config`) and the services
//! kept in the data directory (`--data-dir`). Whatever a registration gains (a field here),
//! the configuration file and the data directory gain with it.

use axum::http::StatusCode;
use themis_mesh::dht::{DELEGATION_LEN, Delegation, MAX_TAG_LEN, MAX_TAGS, MAX_VERSION_LEN};
use themis_mesh::{NodeId, ServiceSpec};

use super::ApiError;
use super::check::{CheckDefinition, CheckSpec};

/// What a provider says about a service it provides through the agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceDefinition {
    /// The service name: required in the configuration file and the data directory; in a
    /// registration body it may be left out (the URL names the service) or must match the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// The local HTTP service calls are POSTed to (`http://HOST:PORT/PATH`).
    pub(crate) upstream: String,
    /// The version announced (canary releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    /// The relative weight announced (0..=65535; default 100; 0 = standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) weight: Option<u16>,
    /// Free tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// The node ids (hex) allowed to call the service; empty: every node may (beyond the
    /// paper: the mesh's access policy, checked against the id the channel authenticated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allow: Vec<String>,
    /// A health check (HTTP, TCP or TTL, as in Consul): the service is announced only while
    /// it passes (see [`super::check`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) check: Option<CheckDefinition>,
    /// The owner's delegation to this node, in hex (the line of the file `themis delegate`
    /// writes): needed for an owned name, refused for any other (PROTOCOL.md §6.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delegation: Option<String>,
}

/// Most node ids in a service's allow-list.
pub(crate) const MAX_ALLOWED: usize = 1024;

/// What `PUT /v1/services/{name}` must look like (in the error for a body that does not parse).
pub(crate) const BODY_SHAPE: &str = r#"{"upstream": "http://127.0.0.1:PORT/PATH", "version": "1.0", "weight": 100, "tags": [], "allow": ["NODE_ID_HEX"], "check": {"http": "http://127.0.0.1:PORT/health", "interval": "10s", "timeout": "2s"}, "delegation": "HEX"}"#;

impl ServiceDefinition {
    /// Parses the JSON body of a registration.
    pub(crate) fn parse_json(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {BODY_SHAPE}: {e}"),
            )
        })
    }

    /// Checks the definition for the service `name` (the URL's): a name in the body must be
    /// the same; the version and tags must fit the provider record's limits.
    pub(crate) fn check(&self, name: &str) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::new(StatusCode::BAD_REQUEST, m));
        if let Some(n) = &self.name
            && n != name
        {
            return bad(format!(
                "the body names the service '{n}' but the URL names '{name}'"
            ));
        }
        if let Some(v) = &self.version
            && v.len() > MAX_VERSION_LEN
        {
            return bad(format!(
                "a version is at most {MAX_VERSION_LEN} bytes, got {}",
                v.len()
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return bad(format!("at most {MAX_TAGS} tags, got {}", self.tags.len()));
        }
        if let Some(t) = self.tags.iter().find(|t| t.len() > MAX_TAG_LEN) {
            return bad(format!(
                "a tag is at most {MAX_TAG_LEN} bytes, '{t}' has {}",
                t.len()
            ));
        }
        self.allowed()?;
        self.check_spec()?;
        self.delegation()?;
        Ok(())
    }

    /// The delegation, decoded (400 unless exactly the hex of one). Whether it lets this node
    /// provide the name is the DHT's check at registration (403 naming the problem).
    pub(crate) fn delegation(&self) -> Result<Option<Delegation>, ApiError> {
        let Some(h) = &self.delegation else {
            return Ok(None);
        };
        crate::owner::unhex(h)
            .and_then(|b| Delegation::decode(&b))
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "a delegation is {} hex digits (the line of the file `themis delegate` writes), got {} characters",
                        2 * DELEGATION_LEN,
                        h.len()
                    ),
                )
            })
    }

    /// The health check, checked (400 naming what contradicts or is out of range).
    pub(crate) fn check_spec(&self) -> Result<Option<CheckSpec>, ApiError> {
        self.check
            .as_ref()
            .map(|c| c.spec())
            .transpose()
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))
    }

    /// The node ids of `allow`, parsed (400 for one that is not a node id, or too many).
    pub(crate) fn allowed(&self) -> Result<Vec<NodeId>, ApiError> {
        if self.allow.len() > MAX_ALLOWED {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "at most {MAX_ALLOWED} allowed callers, got {}",
                    self.allow.len()
                ),
            ));
        }
        self.allow
            .iter()
            .map(|id| {
                id.trim().parse::<NodeId>().map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "allowed caller '{}' is not a node id ({e}); `themis id` or `themis status` prints one",
                            id.chars().take(80).collect::<String>()
                        ),
                    )
                })
            })
            .collect()
    }

    /// The announced service spec: the defaults, overridden by what the definition gives.
    pub(crate) fn spec(&self) -> ServiceSpec {
        let mut spec = ServiceSpec::default();
        if let Some(v) = &self.version {
            spec.version.clone_from(v);
        }
        if let Some(w) = self.weight {
            spec.weight = w;
        }
        spec.tags.clone_from(&self.tags);
        spec.delegation = self.delegation().ok().flatten();
        spec
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_and_toml_are_the_same_definition() {
        let j = ServiceDefinition::parse_json(
            br#"{"name": "hello", "upstream": "http://127.0.0.1:8080/", "version": "1.0", "weight": 7, "tags": ["a"]}"#,
        )
        .unwrap();
        let t: ServiceDefinition = toml::from_str(
            "name = \"hello\"\nupstream = \"http://127.0.0.1:8080/\"\nversion = \"1.0\"\nweight = 7\ntags = [\"a\"]\n",
        )
        .unwrap();
        assert_eq!(j, t);
        assert_eq!(j.spec().weight, 7);
    }

    #[test]
    fn unknown_fields_and_limits_are_refused() {
        let e = ServiceDefinition::parse_json(br#"{"upstream": "http://x/", "wieght": 1}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `wieght`"), "{e}");
        let d = |json: &str| ServiceDefinition::parse_json(json.as_bytes()).unwrap();
        assert!(d(r#"{"upstream": "u", "name": "b"}"#).check("a").is_err());
        assert!(d(r#"{"upstream": "u", "name": "a"}"#).check("a").is_ok());
        let many = format!(
            r#"{{"upstream": "u", "tags": {:?}}}"#,
            vec!["t"; MAX_TAGS + 1]
        );
        assert!(d(&many).check("a").is_err());
        let long = format!(
            r#"{{"upstream": "u", "tags": ["{}"]}}"#,
            "t".repeat(MAX_TAG_LEN + 1)
        );
        assert!(d(&long).check("a").is_err());
        let version = format!(
            r#"{{"upstream": "u", "version": "{}"}}"#,
            "v".repeat(MAX_VERSION_LEN + 1)
        );
        assert!(d(&version).check("a").is_err());
        let id = "ab".repeat(32);
        assert_eq!(
            d(&format!(r#"{{"upstream": "u", "allow": ["{id}"]}}"#))
                .allowed()
                .unwrap(),
            [id.parse::<NodeId>().unwrap()]
        );
        let e = d(r#"{"upstream": "u", "allow": ["nope"]}"#)
            .check("a")
            .unwrap_err();
        assert!(e.to_string().contains("not a node id"), "{e}");
        let e = d(r#"{"upstream": "u", "check": {"ttl": "10s", "tcp": "a:1"}}"#)
            .check("a")
            .unwrap_err();
        assert!(e.to_string().contains("got tcp and ttl"), "{e}");
        let e = ServiceDefinition::parse_json(
            br#"{"upstream": "u", "check": {"http": "http://a:1/", "intervall": "1s"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `intervall`"), "{e}");
    }

    #[test]
    fn a_check_reads_the_same_from_json_and_toml() {
        let j = ServiceDefinition::parse_json(
            br#"{"name": "db", "upstream": "http://127.0.0.1:8080/", "check": {"tcp": "127.0.0.1:5432", "interval": "5s", "timeout": "1s", "failures_before_critical": 3}}"#,
        )
        .unwrap();
        let t: ServiceDefinition = toml::from_str(
            "name = \"db\"\nupstream = \"http://127.0.0.1:8080/\"\ncheck = { tcp = \"127.0.0.1:5432\", interval = \"5s\", timeout = \"1s\", failures_before_critical = 3 }\n",
        )
        .unwrap();
        assert_eq!(j, t);
        let spec = j.check_spec().unwrap().unwrap();
        assert_eq!(spec.kind.name(), "tcp");
        assert_eq!(spec.thresholds.failures_before_critical, 3);
        assert_eq!(j.check("db").map(|()| 1).unwrap(), 1);
    }

    proptest! {
        #[test]
        fn a_definition_survives_json_and_toml(
            name in proptest::option::of("[a-z]{1,20}"),
            upstream in "http://[a-z]{1,10}:[0-9]{1,4}/",
            version in proptest::option::of("[0-9.]{0,8}"),
            weight in proptest::option::of(any::<u16>()),
            tags in proptest::collection::vec("[a-z]{0,8}", 0..4),
            allow in proptest::collection::vec("[0-9a-f]{64}", 0..3),
            check in proptest::option::of((
                proptest::option::of("http://[a-z]{1,10}:[0-9]{1,4}/health"),
                proptest::option::of("[a-z]{1,10}:[0-9]{1,4}"),
                proptest::option::of("[0-9]{1,4}(ms|s|m|h)"),
                proptest::option::of(1u32..100),
            )),
            delegation in proptest::option::of("[0-9a-f]{208}"),
        ) {
            let check = check.map(|(http, tcp, ttl, n)| CheckDefinition {
                http,
                tcp,
                interval: ttl.clone(),
                ttl,
                failures_before_critical: n,
                ..CheckDefinition::default()
            });
            let d = ServiceDefinition {
                name, upstream, version, weight, tags, allow, check, delegation,
            };
            let json = serde_json::to_vec(&d).unwrap();
            prop_assert_eq!(&ServiceDefinition::parse_json(&json).unwrap(), &d);
            let t = toml::to_string(&d).unwrap();
            prop_assert_eq!(&toml::from_str::<ServiceDefinition>(&t).unwrap(), &d);
        }
    }
}
