//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), evaluated on plain label
//! maps, so that everything that selects by labels (pools, advertisements, peers) stays pure.

use std::collections::{BTreeMap, BTreeSet};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A label selector with Kubernetes semantics: every `match_labels` entry and every expression
/// must hold. An empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|&v| v.to_owned()).collect()
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&Labels::new()));
    }

    #[test]
    fn every_label_and_expression_must_hold() {
        let selector = LabelSelector {
            match_labels: labels(&[("team", "web")]),
            match_expressions: vec![
                Requirement::In("tier".into(), set(&["front", "edge"])),
                Requirement::DoesNotExist("legacy".into()),
            ],
        };
        assert!(selector.matches(&labels(&[("team", "web"), ("tier", "edge")])));
        assert!(!selector.matches(&labels(&[("team", "web"), ("tier", "back")])));
        assert!(!selector.matches(&labels(&[("team", "db"), ("tier", "edge")])));
        assert!(!selector.matches(&labels(&[
            ("team", "web"),
            ("tier", "edge"),
            ("legacy", "")
        ])));
    }

    #[test]
    fn not_in_matches_objects_without_the_label() {
        let r = Requirement::NotIn("tier".into(), set(&["back"]));
        assert!(r.matches(&Labels::new()));
        assert!(r.matches(&labels(&[("tier", "front")])));
        assert!(!r.matches(&labels(&[("tier", "back")])));
        assert!(Requirement::Exists("tier".into()).matches(&labels(&[("tier", "")])));
    }
}
