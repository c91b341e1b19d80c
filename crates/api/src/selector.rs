//! Kubernetes label selectors (`matchLabels`, `matchExpressions`) turned into the pure
//! [`herald_domain::LabelSelector`], with an error that names the object and the field.

use herald_domain::{LabelSelector, Requirement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;

/// A selector operator Kubernetes does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{object}: {field}.matchExpressions[{index}].operator: operator {operator:?} is not In, NotIn, Exists or DoesNotExist"
)]
pub struct SelectorError {
    /// The object, as `Kind name`.
    pub object: String,
    pub field: String,
    pub index: usize,
    pub operator: String,
}

/// Converts `selector`, found at `field` of `object` (`Kind name`).
pub fn convert(
    selector: &KubeSelector,
    object: &str,
    field: &str,
) -> Result<LabelSelector, SelectorError> {
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, e)| {
            let values = e.values.iter().flatten().cloned().collect();
            Ok(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(SelectorError {
                        object: object.to_owned(),
                        field: field.to_owned(),
                        index,
                        operator: other.to_owned(),
                    });
                }
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// Converts a list of selectors at `field` (`field[i]` each).
pub fn convert_all(
    selectors: &[KubeSelector],
    object: &str,
    field: &str,
) -> Result<Vec<LabelSelector>, SelectorError> {
    selectors
        .iter()
        .enumerate()
        .map(|(i, s)| convert(s, object, &format!("{field}[{i}]")))
        .collect()
}
