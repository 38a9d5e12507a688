//! PD's HTTP API, the subset clients and tools read: `GET /pd/api/v1/regions`,
//! `/pd/api/v1/stores`, `/pd/api/v1/min-resolved-ts` and `/pd/api/v1/health`.
//!
//! Sans-IO like the rest of the engine: [`Cluster::handle_pd_http`] takes a method and a
//! request target and returns the status and JSON body; the gRPC front serves it over
//! HTTP/1.1 on PD's gRPC port, as a real PD multiplexes both protocols on one port.
//!
//! The JSON follows PD's response types field for field and in PD's order (tikv/pd
//! `pkg/response/region.go`, `pkg/response/store.go`, `server/api/min_resolved_ts.go`,
//! `server/api/health.go`), including Go's `omitempty` rules, so that tools written against a
//! real PD parse it unchanged. Statistics the mock does not keep (sizes, flows, scores from
//! heartbeats) are reported as a freshly bootstrapped PD reports them: zero or absent.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tikv_proto::metapb;

use crate::Cluster;
use crate::codec::hex_upper;

/// An HTTP answer of the PD API, before framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code (200, 400, 404, 405, 500).
    pub status: u16,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The methods the path accepts, for the `Allow` header of a 405 answer.
    pub allow: Option<&'static str>,
    /// The response body.
    pub body: String,
}

impl HttpReply {
    fn json(status: u16, body: String) -> Self {
        HttpReply {
            status,
            content_type: JSON,
            allow: None,
            body,
        }
    }
}

const JSON: &str = "application/json; charset=UTF-8";

/// PD's default `min-resolved-ts-persistence-interval` (1s), which also makes the answer
/// "real time".
const PERSIST_INTERVAL: &str = "1s";

/// The paths served; every one accepts only `GET`, as PD registers them.
const PATHS: [&str; 4] = [
    "/pd/api/v1/regions",
    "/pd/api/v1/stores",
    "/pd/api/v1/min-resolved-ts",
    "/pd/api/v1/health",
];

impl Cluster {
    /// Answers one request of PD's HTTP API: `method` as sent (`GET`), `target` the request
    /// target (path and optional query, e.g. `/pd/api/v1/stores?state=2`).
    ///
    /// Unknown paths get 404 with Go's `404 page not found` text, other methods on a known
    /// path 405, malformed parameters PD's error statuses with the message as a JSON string.
    pub fn handle_pd_http(&mut self, method: &str, target: &str) -> HttpReply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(&path) = PATHS.iter().find(|p| **p == path) else {
            return HttpReply {
                status: 404,
                content_type: "text/plain; charset=utf-8",
                allow: None,
                body: "404 page not found\n".into(),
            };
        };
        if method != "GET" {
            return HttpReply {
                status: 405,
                content_type: "text/plain; charset=utf-8",
                allow: Some("GET"),
                body: String::new(),
            };
        }
        let query = parse_query(query);
        match path {
            "/pd/api/v1/regions" => HttpReply::json(200, self.http_regions().compact()),
            "/pd/api/v1/stores" => self.http_stores(&query),
            "/pd/api/v1/min-resolved-ts" => self.http_min_resolved_ts(&query),
            _ => HttpReply::json(200, self.http_health().indented()),
        }
    }

    /// `GET /pd/api/v1/regions`: `{"count": n, "regions": [RegionInfo...]}` in key order,
    /// compact (PD streams this one without indentation).
    fn http_regions(&self) -> Json {
        let regions: Vec<Json> = self.topology.regions().map(region_json).collect();
        Json::obj([
            ("count", Json::U64(regions.len() as u64)),
            ("regions", Json::Arr(regions)),
        ])
    }

    /// `GET /pd/api/v1/stores[?state=N...]`: Up and Offline stores unless `state` says
    /// otherwise.
    fn http_stores(&self, query: &[(String, String)]) -> HttpReply {
        let mut accept = Vec::new();
        for (k, v) in query {
            if k != "state" {
                continue;
            }
            match v.parse::<i32>() {
                Ok(s) if (0..=2).contains(&s) => accept.push(s),
                Ok(s) => {
                    return error_reply(500, format!("unknown StoreState: {s}"));
                }
                Err(_) => {
                    return error_reply(
                        500,
                        format!("strconv.Atoi: parsing {}: invalid syntax", go_quote(v)),
                    );
                }
            }
        }
        if accept.is_empty() {
            accept = vec![
                metapb::StoreState::Up as i32,
                metapb::StoreState::Offline as i32,
            ];
        }
        let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
        let mut peers: BTreeMap<u64, u64> = BTreeMap::new();
        for region in self.topology.regions() {
            for peer in &region.meta.peers {
                *peers.entry(peer.store_id).or_default() += 1;
            }
            if let Some(leader) = region.leader() {
                *leaders.entry(leader.store_id).or_default() += 1;
            }
        }
        let stores: Vec<Json> = self
            .topology
            .stores()
            .filter(|s| accept.contains(&s.meta.state))
            .map(|s| {
                let id = s.meta.id;
                let leader_count = leaders.get(&id).copied().unwrap_or(0);
                let region_count = peers.get(&id).copied().unwrap_or(0);
                Json::obj([
                    ("store", store_meta_json(&s.meta)),
                    (
                        "status",
                        Json::obj([
                            ("capacity", Json::str("0B")),
                            ("available", Json::str("0B")),
                            ("used_size", Json::str("0B")),
                            ("leader_count", Json::U64(leader_count)),
                            ("leader_weight", Json::U64(1)),
                            // PD's count-based scores: count / weight.
                            ("leader_score", Json::U64(leader_count)),
                            ("leader_size", Json::U64(0)),
                            ("region_count", Json::U64(region_count)),
                            ("region_weight", Json::U64(1)),
                            ("region_score", Json::U64(region_count)),
                            ("region_size", Json::U64(0)),
                        ]),
                    ),
                ])
            })
            .collect();
        let body = Json::obj([
            ("count", Json::U64(stores.len() as u64)),
            ("stores", Json::Arr(stores)),
        ]);
        HttpReply::json(200, body.indented())
    }

    /// `GET /pd/api/v1/min-resolved-ts[?scope=cluster|id,id...]`.
    ///
    /// Each store reports the minimum safe ts of the regions it leads (the same resolver the
    /// stale-read check uses: the last timestamp PD handed out, held at the oldest prewrite
    /// lock). As PD's `IsAvailableForMinResolvedTS`: removed stores and stores leading no
    /// region count as `u64::MAX`, and so does the minimum when no store counts.
    fn http_min_resolved_ts(&mut self, query: &[(String, String)]) -> HttpReply {
        let live: Vec<u64> = self
            .topology
            .stores()
            .filter(|s| !s.is_tombstone())
            .map(|s| s.meta.id)
            .collect();
        let mut reported = BTreeMap::new();
        for id in live {
            if let Some(ts) = self.leader_safe_ts(id) {
                reported.insert(id, ts);
            }
        }
        let resolved = reported.values().copied().min().unwrap_or(u64::MAX);
        let scope = query
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty());
        let (min, stores) = match scope {
            None => (resolved, None),
            Some(scope) => {
                let ids: Vec<u64> = if scope == "cluster" {
                    self.topology.stores().map(|s| s.meta.id).collect()
                } else {
                    let mut ids = Vec::new();
                    for part in scope.split(',') {
                        match part.parse::<u64>() {
                            Ok(id) => ids.push(id),
                            Err(_) => {
                                return error_reply(
                                    400,
                                    format!(
                                        "strconv.ParseUint: parsing {}: invalid syntax",
                                        go_quote(part)
                                    ),
                                );
                            }
                        }
                    }
                    ids
                };
                // As PD: an unknown or removed store has no resolved ts (u64::MAX), and the
                // scope's minimum is taken over the listed stores.
                let per_store: BTreeMap<u64, u64> = ids
                    .into_iter()
                    .map(|id| (id, reported.get(&id).copied().unwrap_or(u64::MAX)))
                    .collect();
                let min = per_store.values().copied().min().unwrap_or(u64::MAX);
                (min, Some(per_store))
            }
        };
        let stores = match stores {
            None => Json::Null,
            Some(m) => Json::Obj(
                m.into_iter()
                    .map(|(id, ts)| (id.to_string(), Json::U64(ts)))
                    .collect(),
            ),
        };
        let body = Json::obj([
            ("is_real_time", Json::Bool(true)),
            ("min_resolved_ts", Json::U64(min)),
            ("persist_interval", Json::str(PERSIST_INTERVAL)),
            ("stores_min_resolved_ts", stores),
        ]);
        HttpReply::json(200, body.indented())
    }

    /// `GET /pd/api/v1/health`: every member, all healthy (the mock's members never fail
    /// their health check).
    fn http_health(&self) -> Json {
        let (members, _) = self.pd_member_list();
        Json::Arr(
            members
                .into_iter()
                .map(|m| {
                    Json::obj([
                        ("name", Json::Str(m.name)),
                        ("member_id", Json::U64(m.member_id)),
                        ("client_urls", str_list(m.client_urls)),
                        ("health", Json::Bool(true)),
                    ])
                })
                .collect(),
        )
    }
}

/// PD's error answer: the message as a JSON string.
fn error_reply(status: u16, message: String) -> HttpReply {
    HttpReply::json(status, Json::Str(message).indented())
}

/// How Go's `%q`/`strconv` quotes a parameter in an error message (close enough for ASCII).
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// A Go `[]string`: `null` when empty (nil), as the members' URLs are before a front sets them.
fn str_list(items: Vec<String>) -> Json {
    if items.is_empty() {
        Json::Null
    } else {
        Json::Arr(items.into_iter().map(Json::Str).collect())
    }
}

/// `response.MetaPeer`: `role_name` always, the embedded `metapb.Peer` fields `omitempty`.
fn peer_json(peer: Option<&metapb::Peer>) -> Json {
    let Some(peer) = peer else {
        // PD renders a missing leader as an empty peer with an empty role name.
        return Json::obj([("role_name", Json::str(""))]);
    };
    let role = metapb::PeerRole::try_from(peer.role).unwrap_or(metapb::PeerRole::Voter);
    let mut fields = vec![("role_name", Json::str(role.as_str_name()))];
    if role == metapb::PeerRole::Learner {
        fields.push(("is_learner", Json::Bool(true)));
    }
    if peer.id != 0 {
        fields.push(("id", Json::U64(peer.id)));
    }
    if peer.store_id != 0 {
        fields.push(("store_id", Json::U64(peer.store_id)));
    }
    if peer.role != 0 {
        fields.push(("role", Json::I64(i64::from(peer.role))));
    }
    if peer.is_witness {
        fields.push(("is_witness", Json::Bool(true)));
    }
    Json::obj(fields)
}

/// `response.RegionInfo`, with keys in upper-case hex as PD's `HexRegionKeyStr` prints them.
fn region_json(region: &crate::topology::RegionInfo) -> Json {
    let meta = &region.meta;
    let epoch = region.epoch();
    let mut epoch_fields = Vec::new();
    if epoch.conf_ver != 0 {
        epoch_fields.push(("conf_ver", Json::U64(epoch.conf_ver)));
    }
    if epoch.version != 0 {
        epoch_fields.push(("version", Json::U64(epoch.version)));
    }
    let mut fields = vec![
        ("id", Json::U64(meta.id)),
        ("start_key", Json::Str(hex_upper(&meta.start_key))),
        ("end_key", Json::Str(hex_upper(&meta.end_key))),
        ("epoch", Json::obj(epoch_fields)),
    ];
    if !meta.peers.is_empty() {
        fields.push((
            "peers",
            Json::Arr(meta.peers.iter().map(|p| peer_json(Some(p))).collect()),
        ));
    }
    fields.push(("leader", peer_json(region.leader())));
    for name in [
        "cpu_usage",
        "written_bytes",
        "read_bytes",
        "written_keys",
        "read_keys",
        "approximate_size",
        "approximate_keys",
        "approximate_kv_size",
        "approximate_columnar_kv_size",
    ] {
        fields.push((name, Json::U64(0)));
    }
    Json::obj(fields)
}

/// `response.MetaStore`: the embedded `metapb.Store` (gogoproto JSON, every field
/// `omitempty`, enums as numbers) plus `state_name`.
fn store_meta_json(store: &metapb::Store) -> Json {
    // gogoproto's field order: id, address, state, labels, version, peer_address,
    // status_address, git_hash, start_timestamp, deploy_path, last_heartbeat,
    // physically_destroyed, node_state.
    let mut out = Vec::new();
    if store.id != 0 {
        out.push(("id", Json::U64(store.id)));
    }
    if !store.address.is_empty() {
        out.push(("address", Json::str(&store.address)));
    }
    if store.state != 0 {
        out.push(("state", Json::I64(i64::from(store.state))));
    }
    if !store.labels.is_empty() {
        out.push((
            "labels",
            Json::Arr(
                store
                    .labels
                    .iter()
                    .map(|l| {
                        let mut label = Vec::new();
                        if !l.key.is_empty() {
                            label.push(("key", Json::str(&l.key)));
                        }
                        if !l.value.is_empty() {
                            label.push(("value", Json::str(&l.value)));
                        }
                        Json::obj(label)
                    })
                    .collect(),
            ),
        ));
    }
    for (name, value) in [
        ("version", &store.version),
        ("peer_address", &store.peer_address),
        ("status_address", &store.status_address),
        ("git_hash", &store.git_hash),
    ] {
        if !value.is_empty() {
            out.push((name, Json::str(value)));
        }
    }
    if store.start_timestamp != 0 {
        out.push(("start_timestamp", Json::I64(store.start_timestamp)));
    }
    if !store.deploy_path.is_empty() {
        out.push(("deploy_path", Json::str(&store.deploy_path)));
    }
    if store.last_heartbeat != 0 {
        out.push(("last_heartbeat", Json::I64(store.last_heartbeat)));
    }
    if store.physically_destroyed {
        out.push(("physically_destroyed", Json::Bool(true)));
    }
    if store.node_state != 0 {
        out.push(("node_state", Json::I64(i64::from(store.node_state))));
    }
    let state = metapb::StoreState::try_from(store.state).unwrap_or(metapb::StoreState::Up);
    out.push(("state_name", Json::str(state.as_str_name())));
    Json::obj(out)
}

/// Form-decoded query parameters in order (`a=1&b=%2C` → `[("a","1"), ("b",",")]`).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding; a malformed escape is kept as it is.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Just enough JSON to write PD's answers with fields in PD's order (a map type would sort
/// them) and in both of PD's layouts: compact, and Go's `MarshalIndent` with two spaces.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    fn obj<'a>(fields: impl IntoIterator<Item = (&'a str, Json)>) -> Json {
        Json::Obj(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None);
        out
    }

    /// Go's `json.MarshalIndent(v, "", "  ")` followed by a newline, as PD's renderer writes.
    fn indented(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(0));
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>) {
        let newline = |out: &mut String, level: usize| {
            out.push('\n');
            for _ in 0..level {
                out.push_str("  ");
            }
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Json::I64(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(level) = indent {
                        newline(out, level + 1);
                    }
                    item.write(out, indent.map(|l| l + 1));
                }
                if let (Some(level), false) = (indent, items.is_empty()) {
                    newline(out, level);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(level) = indent {
                        newline(out, level + 1);
                    }
                    write_str(out, name);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    value.write(out, indent.map(|l| l + 1));
                }
                if let (Some(level), false) = (indent, fields.is_empty()) {
                    newline(out, level);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal, escaped as Go's encoder does (including `<`, `>`, `&`).
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterConfig;

    fn cluster(stores: usize) -> Cluster {
        Cluster::new(ClusterConfig {
            stores,
            ..Default::default()
        })
    }

    #[test]
    fn regions_list_every_region_in_pd_shape() {
        let mut c = cluster(3);
        c.split_at(b"m").unwrap();
        let reply = c.handle_pd_http("GET", "/pd/api/v1/regions");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, JSON);
        let body = reply.body;
        assert!(
            body.starts_with("{\"count\":2,\"regions\":[{\"id\":"),
            "{body}"
        );
        assert!(
            body.contains("\"start_key\":\"\",\"end_key\":\"6D\""),
            "{body}"
        );
        assert!(
            body.contains("\"start_key\":\"6D\",\"end_key\":\"\""),
            "{body}"
        );
        assert!(
            body.contains("\"epoch\":{\"conf_ver\":1,\"version\":2}"),
            "{body}"
        );
        assert!(
            body.contains("\"leader\":{\"role_name\":\"Voter\",\"id\":"),
            "{body}"
        );
        assert!(
            body.contains("\"approximate_columnar_kv_size\":0}"),
            "{body}"
        );
        assert_eq!(body.matches("\"store_id\"").count(), 2 * (3 + 1), "{body}");
    }

    #[test]
    fn stores_are_indented_and_filtered_by_state() {
        let mut c = cluster(2);
        c.set_store_address(1, "127.0.0.1:20160".into()).unwrap();
        let reply = c.handle_pd_http("GET", "/pd/api/v1/stores");
        assert_eq!(reply.status, 200);
        let body = reply.body;
        assert!(body.starts_with("{\n  \"count\": 2,\n  \"stores\": [\n    {\n      \"store\": {\n        \"id\": 1,\n        \"address\": \"127.0.0.1:20160\",\n"), "{body}");
        assert!(body.contains("\"state_name\": \"Up\""), "{body}");
        assert!(body.contains("\"node_state\": 1"), "{body}");
        assert!(body.contains("\"leader_count\": 1"), "{body}");
        assert!(body.contains("\"capacity\": \"0B\""), "{body}");
        assert!(body.ends_with("}\n"), "{body}");
        let tombstones = c.handle_pd_http("GET", "/pd/api/v1/stores?state=2");
        assert!(
            tombstones.body.contains("\"count\": 0"),
            "{}",
            tombstones.body
        );
        assert!(
            tombstones.body.contains("\"stores\": []"),
            "{}",
            tombstones.body
        );
        let bad = c.handle_pd_http("GET", "/pd/api/v1/stores?state=x");
        assert_eq!(bad.status, 500);
        assert_eq!(
            bad.body,
            "\"strconv.Atoi: parsing \\\"x\\\": invalid syntax\"\n"
        );
        assert_eq!(
            c.handle_pd_http("GET", "/pd/api/v1/stores?state=9").status,
            500
        );
    }

    #[test]
    fn min_resolved_ts_follows_tso_and_scope() {
        let mut c = cluster(2);
        c.tso.allocate(1_000, 1).unwrap();
        let ts = c.tso.last_ts();
        let reply = c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts");
        assert_eq!(
            reply.body,
            format!(
                "{{\n  \"is_real_time\": true,\n  \"min_resolved_ts\": {ts},\n  \"persist_interval\": \"1s\",\n  \"stores_min_resolved_ts\": null\n}}\n"
            )
        );
        // Store 2 leads no region yet: PD leaves it out (u64::MAX).
        let scoped = c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts?scope=cluster");
        assert!(
            scoped.body.contains(&format!(
                "\"stores_min_resolved_ts\": {{\n    \"1\": {ts},\n    \"2\": {}\n  }}",
                u64::MAX
            )),
            "{}",
            scoped.body
        );
        c.split_at(b"m").unwrap();
        let right = c.topology().region_by_key(b"m").unwrap().id();
        c.transfer_leader(right, 2).unwrap();
        let scoped = c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts?scope=cluster");
        assert!(
            scoped.body.contains(&format!(
                "\"stores_min_resolved_ts\": {{\n    \"1\": {ts},\n    \"2\": {ts}\n  }}"
            )),
            "{}",
            scoped.body
        );
        let unknown = c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts?scope=1%2C99");
        assert!(
            unknown
                .body
                .contains(&format!("\"min_resolved_ts\": {ts},")),
            "{}",
            unknown.body
        );
        assert!(
            unknown.body.contains(&format!("\"99\": {}", u64::MAX)),
            "{}",
            unknown.body
        );
        let bad = c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts?scope=a");
        assert_eq!(bad.status, 400);
    }

    #[test]
    fn health_lists_members() {
        let mut c = Cluster::new(ClusterConfig {
            pd_members: 2,
            ..Default::default()
        });
        c.set_pd_client_urls(vec!["http://127.0.0.1:2379".into()]);
        let body = c.handle_pd_http("GET", "/pd/api/v1/health").body;
        assert!(body.starts_with("[\n  {\n    \"name\": "), "{body}");
        assert!(
            body.contains(
                "\"client_urls\": [\n      \"http://127.0.0.1:2379\"\n    ],\n    \"health\": true"
            ),
            "{body}"
        );
        assert_eq!(body.matches("\"health\": true").count(), 2, "{body}");
    }

    #[test]
    fn other_paths_and_methods() {
        let mut c = cluster(1);
        let missing = c.handle_pd_http("GET", "/pd/api/v1/nope");
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (404, "404 page not found\n")
        );
        let post = c.handle_pd_http("POST", "/pd/api/v1/regions");
        assert_eq!((post.status, post.allow), (405, Some("GET")));
    }

    #[test]
    fn json_strings_are_escaped_like_go() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c<\n\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\u003c\\n\\u0001\"");
        assert_eq!(form_decode("a+b%2Cc%zz"), "a b,c%zz");
    }
}
