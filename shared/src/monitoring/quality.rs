//! Production quality of a served model: the prediction a node keeps for each request
//! with an `id`, the truth a client's feedback sends for it later, and the metrics the
//! joined rows give — per window, mergeable into any longer span or across nodes.
//!
//! Classification keeps a confusion matrix (exact, by class label) and, when the model
//! answers with scores, the rows' scores and labels for ROC AUC: up to [`MAX_SCORED`]
//! rows per window, a uniform sample beyond (the metrics then say so). Regression keeps
//! the sums of absolute and squared errors (exact). The metrics follow scikit-learn's
//! definitions: binary precision, recall and F1 of class 1, multiclass ones macro
//! averaged over the labels seen (a label never predicted has precision 0), ROC AUC with
//! ties counted half (binary: the score of class 1; multiclass: one-vs-rest, macro
//! averaged over the classes whose rows include both it and others).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::bundle::manifest::Task;
use crate::bundle::manifest::Tensor;
use crate::tensor::TensorData;

/// Rows of scores kept per window for ROC AUC.
pub const MAX_SCORED: usize = 20_000;
/// Distinct class labels a confusion matrix holds; feedback with more is refused.
pub const MAX_CLASSES: usize = 1024;
/// Feedback items one call may carry.
pub const MAX_FEEDBACK_ITEMS: usize = 10_000;
/// Longest request id kept, bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a prediction or a piece of feedback cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QualityError {
    #[error("the prediction output has shape {shape:?}; predictions are read from [N] or [N, K]")]
    Shape { shape: Vec<u64> },
    #[error("the prediction output holds {0}; {1}")]
    Type(&'static str, &'static str),
    #[error("the feedback is not valid JSON: {0}")]
    Json(String),
    #[error(
        "the feedback body must be an object with \"id\" and \"label\", or {{\"feedback\": [...]}} of them"
    )]
    Body,
    #[error("a feedback call carries at most {MAX_FEEDBACK_ITEMS} items; this one has {0}")]
    TooMany(usize),
    #[error("feedback item {index}: {problem}")]
    Item { index: usize, problem: String },
    #[error("the label gives {given} rows; the request had {rows}")]
    Rows { given: usize, rows: usize },
    #[error("label {0} is not a class of this model (0 to {1})")]
    Class(i64, u32),
    #[error("{0}")]
    Label(String),
}

/// What the model answered for a request, row by row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicted {
    /// `classes` scores per row, in class-index order; one per row is the probability of
    /// class 1 of a binary classifier.
    Scores { classes: u32, values: Vec<f32> },
    /// Predicted class labels.
    Labels(Vec<i64>),
    /// Predicted values (regression).
    Values(Vec<f64>),
}

impl Predicted {
    /// Reads the prediction from the model's `output` for `task`.
    pub fn from_output(task: Task, output: &Tensor) -> Result<Self, QualityError> {
        let (rows, width) = match output.shape.as_slice() {
            [n] => (*n, 1),
            [n, k] => (*n, *k),
            _ => {
                return Err(QualityError::Shape {
                    shape: output.shape.clone(),
                });
            }
        };
        let data = &output.data;
        let n = data.len();
        if width == 0 || rows.saturating_mul(width) != n as u64 {
            return Err(QualityError::Shape {
                shape: output.shape.clone(),
            });
        }
        let numbers = || (0..n).filter_map(|i| data.element_f64(i));
        match (task, is_float(data)) {
            (Task::Regression, true) if width == 1 => Ok(Self::Values(numbers().collect())),
            (Task::Regression, true) => Err(QualityError::Shape {
                shape: output.shape.clone(),
            }),
            (Task::Regression, false) => Err(QualityError::Type(
                "integers or strings",
                "a regression's prediction is a float tensor",
            )),
            (Task::Classification, true) => Ok(Self::Scores {
                classes: u32::try_from(width).map_err(|_| QualityError::Shape {
                    shape: output.shape.clone(),
                })?,
                values: numbers().map(|v| v as f32).collect(),
            }),
            (Task::Classification, false)
                if width == 1 && !matches!(data, TensorData::Bytes(_)) =>
            {
                Ok(Self::Labels(numbers().map(|v| v as i64).collect()))
            }
            (Task::Classification, false) => Err(QualityError::Type(
                "strings or several labels per row",
                "a classifier's prediction is scores or one integer label per row",
            )),
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Self::Scores { classes, values } => values.len() / (*classes).max(1) as usize,
            Self::Labels(v) => v.len(),
            Self::Values(v) => v.len(),
        }
    }

    fn task(&self) -> Task {
        match self {
            Self::Values(_) => Task::Regression,
            _ => Task::Classification,
        }
    }

    /// The predicted class of row `i` (argmax, the first on ties; a probability of class
    /// 1 from 0.5).
    fn class(&self, i: usize) -> i64 {
        match self {
            Self::Scores { classes: 1, values } => i64::from(values[i] >= 0.5),
            Self::Scores { classes, values } => {
                let k = *classes as usize;
                let row = &values[i * k..(i + 1) * k];
                let mut best = 0;
                for (j, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = j;
                    }
                }
                i64::try_from(best).unwrap_or(i64::MAX)
            }
            Self::Labels(v) => v[i],
            Self::Values(v) => v[i] as i64,
        }
    }
}

fn is_float(data: &TensorData) -> bool {
    matches!(
        data,
        TensorData::Float16(_)
            | TensorData::Bfloat16(_)
            | TensorData::Float32(_)
            | TensorData::Float64(_)
    )
}

/// The truth feedback gives for a request, row by row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    Labels(Vec<i64>),
    Values(Vec<f64>),
}

impl Truth {
    /// Reads `label` (a scalar for one row, or an array of them) for `predicted`, and
    /// checks it fits: as many rows, classes the model has.
    pub fn read(label: &Value, predicted: &Predicted) -> Result<Self, QualityError> {
        let items: &[Value] = match label {
            Value::Array(a) => a,
            scalar => std::slice::from_ref(scalar),
        };
        let rows = predicted.rows();
        if items.len() != rows {
            return Err(QualityError::Rows {
                given: items.len(),
                rows,
            });
        }
        match predicted.task() {
            Task::Regression => items
                .iter()
                .map(|v| {
                    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                        QualityError::Label(format!(
                            "{v} is not a number; a regression's label is its true value"
                        ))
                    })
                })
                .collect::<Result<_, _>>()
                .map(Self::Values),
            Task::Classification => {
                let classes = match predicted {
                    Predicted::Scores { classes, .. } => Some((*classes).max(2)),
                    _ => None,
                };
                items
                    .iter()
                    .map(|v| {
                        let label = match v {
                            Value::Bool(b) => Some(i64::from(*b)),
                            other => other.as_i64(),
                        }
                        .ok_or_else(|| {
                            QualityError::Label(format!(
                                "{v} is not a class label; a classifier's label is an integer class"
                            ))
                        })?;
                        match classes {
                            Some(k) if !(0..i64::from(k)).contains(&label) => {
                                Err(QualityError::Class(label, k - 1))
                            }
                            _ => Ok(label),
                        }
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::Labels)
            }
        }
    }
}

/// One piece of feedback as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackItem {
    pub id: String,
    pub label: Value,
}

/// Reads a feedback body: `{"id": "…", "label": …}` or `{"feedback": [those]}`.
pub fn parse_feedback(body: &[u8]) -> Result<Vec<FeedbackItem>, QualityError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| QualityError::Json(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(QualityError::Body);
    };
    let items = match object.remove("feedback") {
        Some(Value::Array(items)) if object.is_empty() => items,
        Some(_) => return Err(QualityError::Body),
        None => vec![Value::Object(object)],
    };
    if items.len() > MAX_FEEDBACK_ITEMS {
        return Err(QualityError::TooMany(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let problem = |problem: &str| QualityError::Item {
                index,
                problem: problem.to_owned(),
            };
            let Value::Object(mut o) = item else {
                return Err(problem("not an object with \"id\" and \"label\""));
            };
            let id = match o.remove("id") {
                Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_BYTES => id,
                Some(Value::String(_)) => {
                    return Err(problem(&format!(
                        "\"id\" must be 1 to {MAX_ID_BYTES} bytes, the inference request's id"
                    )));
                }
                _ => {
                    return Err(problem(
                        "\"id\" (a string: the inference request's id) is missing",
                    ));
                }
            };
            let label = o
                .remove("label")
                .ok_or_else(|| problem("\"label\" (the true class or value) is missing"))?;
            if let Some(key) = o.keys().next() {
                return Err(problem(&format!("unknown field {key:?}")));
            }
            Ok(FeedbackItem { id, label })
        })
        .collect()
}

/// What became of feedback, counted per window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeedbackCounts {
    /// Joined with the kept prediction.
    pub joined: u64,
    /// For a prediction kept once but expired or evicted since.
    pub late: u64,
    /// For a prediction already joined.
    pub duplicate: u64,
    /// For an id never seen (or not kept: the request had no prediction to keep).
    pub unknown: u64,
    /// Labels that do not fit the prediction (rows, classes, types).
    pub invalid: u64,
}

impl FeedbackCounts {
    pub fn merge(&mut self, other: &Self) {
        self.joined += other.joined;
        self.late += other.late;
        self.duplicate += other.duplicate;
        self.unknown += other.unknown;
        self.invalid += other.invalid;
    }

    pub fn total(&self) -> u64 {
        self.joined + self.late + self.duplicate + self.unknown + self.invalid
    }
}

/// Scores and true labels of classification rows, for ROC AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub classes: u32,
    /// Rows offered; more than `labels.len()` when these are a sample.
    pub seen: u64,
    pub labels: Vec<i64>,
    /// `classes` per row.
    pub scores: Vec<f32>,
}

impl Scored {
    fn new(classes: u32) -> Self {
        Self {
            classes,
            seen: 0,
            labels: Vec::new(),
            scores: Vec::new(),
        }
    }

    fn width(&self) -> usize {
        self.classes.max(1) as usize
    }

    /// Offers one row; keeps a uniform sample of `cap` rows (a reservoir with a fixed,
    /// position-derived choice, so the same rows give the same sample).
    fn offer(&mut self, label: i64, scores: &[f32], cap: usize) {
        let i = self.seen;
        self.seen += 1;
        if self.labels.len() < cap {
            self.labels.push(label);
            self.scores.extend_from_slice(scores);
            return;
        }
        let j = (splitmix(i) % (i + 1)) as usize;
        if j < cap {
            let w = self.width();
            self.labels[j] = label;
            self.scores[j * w..(j + 1) * w].copy_from_slice(scores);
        }
    }

    fn merge(&mut self, other: &Self, cap: usize) {
        if self.classes != other.classes {
            return;
        }
        let w = self.width();
        if self.labels.len() + other.labels.len() <= cap {
            self.labels.extend_from_slice(&other.labels);
            self.scores.extend_from_slice(&other.scores);
            self.seen += other.seen;
            return;
        }
        // Both are uniform samples: keep from each in proportion to the rows it stands for.
        let seen = self.seen + other.seen;
        let ours = ((cap as u128 * u128::from(self.seen)) / u128::from(seen.max(1))) as usize;
        let ours = ours.min(self.labels.len());
        let theirs = (cap - ours).min(other.labels.len());
        self.labels.truncate(ours);
        self.scores.truncate(ours * w);
        self.labels.extend_from_slice(&other.labels[..theirs]);
        self.scores.extend_from_slice(&other.scores[..theirs * w]);
        self.seen = seen;
    }

    fn sampled(&self) -> bool {
        self.seen > self.labels.len() as u64
    }

    /// ROC AUC: binary on the score of class 1, else one-vs-rest macro averaged.
    fn roc_auc(&self) -> Option<f64> {
        let w = self.width();
        let column =
            |c: usize| -> Vec<f32> { self.scores.iter().skip(c).step_by(w).copied().collect() };
        if self.classes <= 2 {
            let scores = column(usize::from(self.classes != 1));
            return auc(&scores, &self.labels, 1);
        }
        let aucs: Vec<f64> = (0..w)
            .filter_map(|c| auc(&column(c), &self.labels, i64::try_from(c).ok()?))
            .collect();
        (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
    }
}

/// The area under the ROC curve of `scores` for `labels == positive`: the Mann–Whitney
/// statistic with tied scores ranked on average. `None` without both kinds of rows.
fn auc(scores: &[f32], labels: &[i64], positive: i64) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| !scores[i].is_nan()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut positives) = (0.0f64, 0u64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]].total_cmp(&scores[order[i]]).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let rank = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            if labels[k] == positive {
                rank_sum += rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = order.len() as u64 - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Joined rows of one model version, folded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityStats {
    pub task: Task,
    /// Feedback calls joined, and the rows they held.
    pub requests: u64,
    pub rows: u64,
    /// Classification: `(truth, predicted, rows)`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion: Vec<(i64, i64, u64)>,
    /// Classification with scores: rows for ROC AUC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored: Option<Scored>,
    /// Regression: sums of |error| and error².
    #[serde(default)]
    pub abs_error: f64,
    #[serde(default)]
    pub squared_error: f64,
}

impl QualityStats {
    pub fn new(task: Task) -> Self {
        Self {
            task,
            requests: 0,
            rows: 0,
            confusion: Vec::new(),
            scored: None,
            abs_error: 0.0,
            squared_error: 0.0,
        }
    }

    /// Folds in a request's prediction and its truth (read by [`Truth::read`] for it).
    pub fn add(&mut self, predicted: &Predicted, truth: &Truth) -> Result<(), QualityError> {
        let rows = predicted.rows();
        self.requests += 1;
        match (predicted, truth) {
            (Predicted::Values(p), Truth::Values(t)) if p.len() == t.len() => {
                for (p, t) in p.iter().zip(t) {
                    let e = p - t;
                    self.abs_error += e.abs();
                    self.squared_error += e * e;
                }
            }
            (_, Truth::Labels(t))
                if t.len() == rows && predicted.task() == Task::Classification =>
            {
                let new = t
                    .iter()
                    .zip(0..rows)
                    .map(|(t, i)| (*t, predicted.class(i)))
                    .filter(|key| {
                        self.confusion
                            .binary_search_by(|(a, b, _)| (*a, *b).cmp(key))
                            .is_err()
                    })
                    .collect::<std::collections::BTreeSet<_>>();
                if self.confusion.len() + new.len() > MAX_CLASSES * MAX_CLASSES
                    || self.classes_with(&new) > MAX_CLASSES
                {
                    self.requests -= 1;
                    return Err(QualityError::Label(format!(
                        "more than {MAX_CLASSES} distinct class labels"
                    )));
                }
                for (i, truth) in t.iter().enumerate() {
                    let key = (*truth, predicted.class(i));
                    match self
                        .confusion
                        .binary_search_by(|(a, b, _)| (*a, *b).cmp(&key))
                    {
                        Ok(at) => self.confusion[at].2 += 1,
                        Err(at) => self.confusion.insert(at, (key.0, key.1, 1)),
                    }
                }
                if let Predicted::Scores { classes, values } = predicted {
                    let scored = self.scored.get_or_insert_with(|| Scored::new(*classes));
                    if scored.classes == *classes {
                        let w = (*classes).max(1) as usize;
                        for (i, truth) in t.iter().enumerate() {
                            scored.offer(*truth, &values[i * w..(i + 1) * w], MAX_SCORED);
                        }
                    }
                }
            }
            _ => {
                self.requests -= 1;
                return Err(QualityError::Rows {
                    given: match truth {
                        Truth::Labels(t) => t.len(),
                        Truth::Values(t) => t.len(),
                    },
                    rows,
                });
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    fn classes_with(&self, new: &std::collections::BTreeSet<(i64, i64)>) -> usize {
        let mut labels: std::collections::BTreeSet<i64> = self
            .confusion
            .iter()
            .flat_map(|(t, p, _)| [*t, *p])
            .collect();
        labels.extend(new.iter().flat_map(|(t, p)| [*t, *p]));
        labels.len()
    }

    /// Adds `other` (of the same task) in; scored rows stay within `cap`.
    pub fn merge(&mut self, other: &Self, cap: usize) {
        if self.task != other.task {
            return;
        }
        self.requests += other.requests;
        self.rows += other.rows;
        self.abs_error += other.abs_error;
        self.squared_error += other.squared_error;
        for &(t, p, n) in &other.confusion {
            match self
                .confusion
                .binary_search_by(|(a, b, _)| (*a, *b).cmp(&(t, p)))
            {
                Ok(at) => self.confusion[at].2 += n,
                Err(at) => self.confusion.insert(at, (t, p, n)),
            }
        }
        match (&mut self.scored, &other.scored) {
            (Some(ours), Some(theirs)) => ours.merge(theirs, cap),
            (None, Some(theirs)) => self.scored = Some(theirs.clone()),
            _ => {}
        }
    }

    /// The metrics these rows give.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics {
            rows: self.rows,
            ..Metrics::default()
        };
        if self.rows == 0 {
            return m;
        }
        match self.task {
            Task::Regression => {
                let n = self.rows as f64;
                m.mae = Some(self.abs_error / n);
                m.rmse = Some((self.squared_error / n).sqrt());
            }
            Task::Classification => {
                self.classification_metrics(&mut m);
                if let Some(s) = &self.scored {
                    m.roc_auc = s.roc_auc();
                    m.roc_auc_rows = s.labels.len() as u64;
                    m.roc_auc_sampled = s.sampled();
                }
            }
        }
        m
    }

    fn classification_metrics(&self, m: &mut Metrics) {
        let labels: std::collections::BTreeSet<i64> = self
            .confusion
            .iter()
            .flat_map(|(t, p, _)| [*t, *p])
            .collect();
        let total: u64 = self.confusion.iter().map(|c| c.2).sum();
        let count = |f: &dyn Fn(i64, i64) -> bool| -> u64 {
            self.confusion
                .iter()
                .filter(|(t, p, _)| f(*t, *p))
                .map(|c| c.2)
                .sum()
        };
        let correct = count(&|t, p| t == p);
        m.accuracy = Some(correct as f64 / total as f64);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_label = |l: i64| {
            let tp = count(&|t, p| t == l && p == l);
            let predicted = count(&|_, p| p == l);
            let actual = count(&|t, _| t == l);
            (
                ratio(tp, predicted),
                ratio(tp, actual),
                ratio(2 * tp, predicted + actual),
            )
        };
        let binary = match &self.scored {
            Some(s) => s.classes <= 2,
            None => labels.iter().all(|l| *l == 0 || *l == 1),
        };
        let (p, r, f) = if binary {
            per_label(1)
        } else {
            let n = labels.len() as f64;
            labels
                .iter()
                .map(|l| per_label(*l))
                .fold((0.0, 0.0, 0.0), |acc, x| {
                    (acc.0 + x.0 / n, acc.1 + x.1 / n, acc.2 + x.2 / n)
                })
        };
        m.precision = Some(p);
        m.recall = Some(r);
        m.f1 = Some(f);
        m.classes = labels.len() as u32;
        m.multiclass = !binary;
    }
}

/// Quality metrics of joined rows; absent where the task or the rows do not give one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Rows ROC AUC was computed on, and whether they are a sample of the joined rows.
    #[serde(skip_serializing_if = "is_zero")]
    pub roc_auc_rows: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub roc_auc_sampled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Class labels seen; precision, recall and F1 are macro averages over them when
    /// `multiclass`.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub classes: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub multiclass: bool,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Metrics {
    pub fn get(&self, metric: QualityMetric) -> Option<f64> {
        match metric {
            QualityMetric::Accuracy => self.accuracy,
            QualityMetric::Precision => self.precision,
            QualityMetric::Recall => self.recall,
            QualityMetric::F1 => self.f1,
            QualityMetric::RocAuc => self.roc_auc,
            QualityMetric::Mae => self.mae,
            QualityMetric::Rmse => self.rmse,
        }
    }

    /// Every metric present, in [`QualityMetric::ALL`]'s order.
    pub fn present(&self) -> Vec<(QualityMetric, f64)> {
        QualityMetric::ALL
            .iter()
            .filter_map(|m| self.get(*m).map(|v| (*m, v)))
            .collect()
    }
}

/// A quality metric by name, for gates and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityMetric {
    Accuracy,
    Precision,
    Recall,
    F1,
    RocAuc,
    Mae,
    Rmse,
}

impl QualityMetric {
    pub const ALL: [Self; 7] = [
        Self::Accuracy,
        Self::Precision,
        Self::Recall,
        Self::F1,
        Self::RocAuc,
        Self::Mae,
        Self::Rmse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::Precision => "precision",
            Self::Recall => "recall",
            Self::F1 => "f1",
            Self::RocAuc => "roc_auc",
            Self::Mae => "mae",
            Self::Rmse => "rmse",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let text = text.to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == text || (text == "auc" && *m == Self::RocAuc))
    }

    /// Whether a larger value is better (errors are not).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::Mae | Self::Rmse)
    }

    /// Whether `value` meets a gate of `bound` on this metric.
    pub fn meets(self, value: f64, bound: f64) -> bool {
        if self.higher_is_better() {
            value >= bound
        } else {
            value <= bound
        }
    }
}

/// One model version's joined rows in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionQuality {
    pub version: String,
    /// Bundle id, `sha256:<hex>`.
    pub bundle: String,
    pub stats: QualityStats,
}

/// A closed feedback window of one model on one node: what became of the feedback that
/// arrived in it, and the joined rows per version. Travels from the node's buffer to
/// the controller as an event record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityWindow {
    pub model: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub feedback: FeedbackCounts,
    pub versions: Vec<VersionQuality>,
    /// Labels joined with captured requests, for `gantry capture export`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<super::capture::CaptureLabel>,
}

impl QualityWindow {
    pub fn version(&self, bundle: &str) -> Option<&VersionQuality> {
        self.versions.iter().find(|v| v.bundle == bundle)
    }
}

/// A model version's latest quality window in a few figures: what heartbeats carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualitySummary {
    pub window_end_ms: u64,
    pub metrics: Metrics,
    /// Since the node started serving the version.
    pub cumulative: Metrics,
}
