//! The service's own OpenAPI document (fetched from `/openapi.json`, so
//! that the check follows the spec the binary serves): which operation a
//! request reached and which statuses that operation declares.

use std::collections::{BTreeMap, BTreeSet};

/// One operation: its method, path template split in segments, declared
/// statuses.
#[derive(Clone, Debug)]
struct Operation {
    id: String,
    method: String,
    segments: Vec<String>,
    statuses: BTreeSet<u16>,
}

#[derive(Clone, Debug, Default)]
pub struct Spec {
    ops: Vec<Operation>,
}

impl Spec {
    pub fn from_json(doc: &serde_json::Value) -> anyhow::Result<Spec> {
        let mut ops = Vec::new();
        let paths = doc["paths"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("the spec has no paths"))?;
        for (template, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, op) in methods {
                let statuses = op["responses"]
                    .as_object()
                    .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
                    .unwrap_or_default();
                ops.push(Operation {
                    id: op["operationId"].as_str().unwrap_or(template).to_owned(),
                    method: method.to_ascii_uppercase(),
                    segments: template.split('/').map(str::to_owned).collect(),
                    statuses,
                });
            }
        }
        // Literal segments win over parameters (`/v1/admin/reviews` over
        // `/v1/admin/{x}` if both existed).
        ops.sort_by_key(|o| o.segments.iter().filter(|s| s.starts_with('{')).count());
        Ok(Spec { ops })
    }

    fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        self.ops.iter().find(|o| {
            o.method == method
                && o.segments.len() == segs.len()
                && o.segments
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
    }

    /// The operation id a request reaches, if any.
    pub fn operation(&self, method: &str, path: &str) -> Option<String> {
        self.find(method, path).map(|o| o.id.clone())
    }

    /// Whether `status` is declared by the operation `method path` reaches;
    /// `None` when the request reaches no operation.
    pub fn declares(&self, method: &str, path: &str, status: u16) -> Option<bool> {
        self.find(method, path)
            .map(|o| o.statuses.contains(&status))
    }

    pub fn summary(&self) -> BTreeMap<String, Vec<u16>> {
        self.ops
            .iter()
            .map(|o| (o.id.clone(), o.statuses.iter().copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_operations_and_their_statuses() {
        let doc = serde_json::json!({"paths": {
            "/v1/users/{user_id}/cards": {
                "get": {"operationId": "listCards", "responses": {"200": {}, "400": {}}},
                "post": {"operationId": "bindCard", "responses": {"201": {}, "202": {}}}
            },
            "/v1/users/{user_id}/cards/{card_id}": {
                "delete": {"operationId": "unbindCard", "responses": {"200": {}}}
            }
        }});
        let s = Spec::from_json(&doc).unwrap();
        assert_eq!(
            s.operation("POST", "/v1/users/u1/cards").as_deref(),
            Some("bindCard")
        );
        assert_eq!(s.declares("POST", "/v1/users/u1/cards", 202), Some(true));
        assert_eq!(s.declares("POST", "/v1/users/u1/cards", 500), Some(false));
        assert_eq!(
            s.declares("GET", "/v1/users/u1/cards?limit=5", 400),
            Some(true)
        );
        assert_eq!(
            s.declares("DELETE", "/v1/users/u1/cards/c1", 200),
            Some(true)
        );
        assert_eq!(s.declares("PUT", "/v1/users/u1/cards", 200), None);
        assert_eq!(s.declares("POST", "/v1/users//cards", 201), None);
    }
}
