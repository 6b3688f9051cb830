//! Profiles: per feature of a model's inputs and outputs, how its values are
//! distributed — the bundle's reference profile, and the windows a node profiles from
//! the requests it serves (same structure, counted on the reference's bins, so the two
//! compare and windows merge).
//!
//! # Features of a tensor
//!
//! The first dimension is the batch (a row is one example). What a feature is follows
//! the reference data's shape, and is recorded as the tensor's [`Layout`]:
//!
//! - rank 0 or 1: the tensor is one feature (`Whole`), every element a value;
//! - rank 2 with at most [`MAX_FEATURES`] columns: each column is a feature (`Columns`,
//!   the tabular case), named after the reference data's column headers where it had
//!   them, else `tensor[j]`;
//! - rank 3 or more with at most [`MAX_FEATURES`] channels (`[N, C, …]`, as ONNX lays out
//!   images): each channel is a feature whose value, per row, is the mean of that
//!   channel's elements (`Channels`);
//! - wider tensors (sequences, embeddings): one feature whose value, per row, is the
//!   mean of the row's elements (`RowMean`).
//!
//! A feature is numeric — a [`Sketch`] and counts on bins cut at the reference's
//! deciles — or categorical — counts of the reference's most frequent values (at most
//! [`MAX_CATEGORIES`]) and of the rest. Floating-point features are numeric; booleans
//! and strings categorical; integers categorical when the reference has at most
//! [`MAX_CATEGORIES`] distinct values, else numeric. Channel and row means are numeric.
//! NaN counts as missing; a value outside the reference's range as out of range.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Sketch;
use crate::bundle::manifest::Tensor;
use crate::tensor::TensorData;

/// Most features a tensor is split into; a wider one is profiled by its row means.
pub const MAX_FEATURES: usize = 64;
/// Most distinct values a categorical feature counts apart.
pub const MAX_CATEGORIES: usize = 32;
/// Bins of a numeric feature: cut at the reference's deciles.
pub const BINS: usize = 10;
/// Longest category label kept (longer strings are cut, on a character boundary).
pub const MAX_LABEL: usize = 128;
/// Largest profile file accepted.
pub const MAX_PROFILE_BYTES: usize = 16 << 20;
/// The profile format's version.
pub const PROFILE_SCHEMA: u32 = 1;

/// Inputs or outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Input,
    Output,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// How a tensor is split into features (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Layout {
    Whole,
    Columns { width: u64 },
    Channels { channels: u64 },
    RowMean,
}

impl Layout {
    /// The layout reference data of `shape` is profiled with.
    pub fn for_shape(shape: &[u64]) -> Self {
        match shape.len() {
            0 | 1 => Self::Whole,
            2 if shape[1] as usize <= MAX_FEATURES => Self::Columns { width: shape[1] },
            n if n >= 3 && shape[1] as usize <= MAX_FEATURES => {
                Self::Channels { channels: shape[1] }
            }
            _ => Self::RowMean,
        }
    }

    /// How many features it makes.
    pub fn features(self) -> usize {
        match self {
            Self::Whole | Self::RowMean => 1,
            Self::Columns { width } => width as usize,
            Self::Channels { channels } => channels as usize,
        }
    }

    /// Whether a tensor of `shape` can be profiled with this layout.
    fn fits(self, shape: &[u64]) -> bool {
        match self {
            Self::Whole => shape.len() <= 1,
            Self::Columns { width } => shape.len() == 2 && shape[1] == width,
            Self::Channels { channels } => shape.len() >= 3 && shape[1] == channels,
            Self::RowMean => shape.len() >= 2,
        }
    }
}

/// A profile: the reference's, or a window's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub schema: u32,
    /// Rows (examples) profiled.
    pub rows: u64,
    pub tensors: Vec<TensorProfile>,
}

/// One tensor's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorProfile {
    pub name: String,
    pub side: Side,
    pub layout: Layout,
    /// Tensors of a request whose shape did not fit the layout, so were not profiled.
    #[serde(default)]
    pub unprofiled: u64,
    pub features: Vec<FeatureProfile>,
}

/// One feature's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    pub name: String,
    /// Values seen, missing ones included.
    pub count: u64,
    /// NaN values.
    pub missing: u64,
    pub values: Values,
}

/// A feature's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Values {
    Numeric(Box<Numeric>),
    Categorical(Categorical),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numeric {
    /// Increasing cut points; bin `i` holds the values in `(edges[i-1], edges[i]]`.
    pub edges: Vec<f64>,
    /// Values per bin (`edges.len() + 1`).
    pub bins: Vec<u64>,
    /// The reference's smallest and largest value: the range a window is checked against.
    pub expected_min: f64,
    pub expected_max: f64,
    /// Values outside the expected range (always 0 in the reference).
    pub out_of_range: u64,
    /// This profile's own smallest and largest value and sums (finite values only).
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: f64,
    pub sum_squares: f64,
    pub sketch: Sketch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Categorical {
    /// The reference's most frequent values, as labels (integers in decimal, booleans as
    /// `true`/`false`, strings as UTF-8).
    pub labels: Vec<String>,
    /// Values per label.
    pub counts: Vec<u64>,
    /// Values that are none of the labels.
    pub other: u64,
}

/// A profile that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("the profile is {size} bytes; at most {MAX_PROFILE_BYTES}")]
    TooLarge { size: usize },
    #[error("the profile is not valid: {0}")]
    Json(String),
    #[error("the profile has schema {0}; this version reads schema {PROFILE_SCHEMA}")]
    Schema(u32),
    #[error("the profile's {0}")]
    Inconsistent(String),
}

impl Numeric {
    pub fn mean(&self, count: u64) -> Option<f64> {
        (count > 0).then(|| self.sum / count as f64)
    }

    /// The bin a value falls in.
    fn bin(&self, value: f64) -> usize {
        self.edges.partition_point(|e| *e < value)
    }
}

impl Profile {
    /// Reads a profile file, checking it is whole: counts per bin and label match, edges
    /// increase, every number is finite.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProfileError> {
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge { size: bytes.len() });
        }
        let profile: Self =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Json(e.to_string()))?;
        if profile.schema != PROFILE_SCHEMA {
            return Err(ProfileError::Schema(profile.schema));
        }
        profile.check()?;
        Ok(profile)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("profiles serialize")
    }

    fn check(&self) -> Result<(), ProfileError> {
        let bad = |what: String| Err(ProfileError::Inconsistent(what));
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            if !seen.insert((t.side, t.name.as_str())) {
                return bad(format!("tensor {:?} is profiled twice", t.name));
            }
            if t.features.len() != t.layout.features() {
                return bad(format!(
                    "tensor {:?} has {} features; its layout makes {}",
                    t.name,
                    t.features.len(),
                    t.layout.features()
                ));
            }
            for f in &t.features {
                let what = format!("feature {:?} of {:?}", f.name, t.name);
                match &f.values {
                    Values::Numeric(n) => {
                        if n.bins.len() != n.edges.len() + 1 || n.edges.len() >= 4 * BINS {
                            return bad(format!(
                                "{what} has {} bins for {} edges",
                                n.bins.len(),
                                n.edges.len()
                            ));
                        }
                        if n.edges.iter().any(|e| !e.is_finite())
                            || n.edges.windows(2).any(|w| w[0] >= w[1])
                        {
                            return bad(format!("{what} has edges that do not increase"));
                        }
                        if !(n.expected_min.is_finite() && n.expected_max.is_finite()) {
                            return bad(format!("{what} has no finite expected range"));
                        }
                    }
                    Values::Categorical(c) => {
                        if c.labels.len() != c.counts.len() || c.labels.len() > MAX_CATEGORIES {
                            return bad(format!(
                                "{what} has {} labels and {} counts",
                                c.labels.len(),
                                c.counts.len()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The profile of tensor `name` on `side`.
    pub fn tensor(&self, side: Side, name: &str) -> Option<&TensorProfile> {
        self.tensors
            .iter()
            .find(|t| t.side == side && t.name == name)
    }

    /// An empty window on this (reference) profile's bins and labels.
    #[must_use]
    pub fn empty_window(&self) -> Self {
        let mut window = self.clone();
        window.rows = 0;
        for t in &mut window.tensors {
            t.unprofiled = 0;
            for f in &mut t.features {
                f.count = 0;
                f.missing = 0;
                match &mut f.values {
                    Values::Numeric(n) => {
                        n.bins.iter_mut().for_each(|b| *b = 0);
                        n.out_of_range = 0;
                        n.min = None;
                        n.max = None;
                        n.sum = 0.0;
                        n.sum_squares = 0.0;
                        n.sketch = Sketch::default();
                    }
                    Values::Categorical(c) => {
                        c.counts.iter_mut().for_each(|n| *n = 0);
                        c.other = 0;
                    }
                }
            }
        }
        window
    }

    /// Adds `other` (a window on the same reference) to this one.
    pub fn merge(&mut self, other: &Self) -> Result<(), ProfileError> {
        let mismatch = |what: &str| {
            Err(ProfileError::Inconsistent(format!(
                "{what} differs from the one it is merged with"
            )))
        };
        if self.tensors.len() != other.tensors.len() {
            return mismatch("set of tensors");
        }
        self.rows += other.rows;
        for (a, b) in self.tensors.iter_mut().zip(&other.tensors) {
            if a.name != b.name
                || a.side != b.side
                || a.layout != b.layout
                || a.features.len() != b.features.len()
            {
                return mismatch(&format!("tensor {:?}", a.name));
            }
            a.unprofiled += b.unprofiled;
            for (fa, fb) in a.features.iter_mut().zip(&b.features) {
                fa.count += fb.count;
                fa.missing += fb.missing;
                match (&mut fa.values, &fb.values) {
                    (Values::Numeric(x), Values::Numeric(y)) if x.edges == y.edges => {
                        x.bins.iter_mut().zip(&y.bins).for_each(|(p, q)| *p += q);
                        x.out_of_range += y.out_of_range;
                        x.min = min_opt(x.min, y.min);
                        x.max = max_opt(x.max, y.max);
                        x.sum += y.sum;
                        x.sum_squares += y.sum_squares;
                        x.sketch.merge(&y.sketch);
                    }
                    (Values::Categorical(x), Values::Categorical(y)) if x.labels == y.labels => {
                        x.counts
                            .iter_mut()
                            .zip(&y.counts)
                            .for_each(|(p, q)| *p += q);
                        x.other += y.other;
                    }
                    _ => return mismatch(&format!("feature {:?}", fa.name)),
                }
            }
        }
        Ok(())
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// A category key, as requests carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Int(i128),
    Text(Vec<u8>),
}

impl Key {
    fn label(&self) -> String {
        match self {
            Self::Int(i) => i.to_string(),
            Self::Text(t) => cut_label(&String::from_utf8_lossy(t)),
        }
    }

    fn of_label(label: &str, data: &TensorData) -> Self {
        match data {
            TensorData::Bool(_) => Self::Int(i128::from(label == "true")),
            TensorData::Bytes(_) => Self::Text(label.as_bytes().to_vec()),
            _ => label
                .parse()
                .map_or_else(|_| Self::Text(label.as_bytes().to_vec()), Self::Int),
        }
    }
}

fn cut_label(text: &str) -> String {
    if text.len() <= MAX_LABEL {
        return text.to_owned();
    }
    let mut end = MAX_LABEL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn bool_label(key: &Key) -> String {
    match key {
        Key::Int(0) => "false".to_owned(),
        Key::Int(_) => "true".to_owned(),
        Key::Text(_) => key.label(),
    }
}

/// Element `i` of `data` as a category key; `None` for floating-point data.
fn key_at(data: &TensorData, i: usize) -> Option<Key> {
    match data {
        TensorData::Bytes(v) => Some(Key::Text(v[i].clone())),
        _ => int_at(data, i).map(Key::Int),
    }
}

/// Element `i` of integer or boolean `data`; `None` for strings and floating point.
fn int_at(data: &TensorData, i: usize) -> Option<i128> {
    Some(match data {
        TensorData::Bool(v) => i128::from(v[i]),
        TensorData::Uint8(v) => i128::from(v[i]),
        TensorData::Uint16(v) => i128::from(v[i]),
        TensorData::Uint32(v) => i128::from(v[i]),
        TensorData::Uint64(v) => i128::from(v[i]),
        TensorData::Int8(v) => i128::from(v[i]),
        TensorData::Int16(v) => i128::from(v[i]),
        TensorData::Int32(v) => i128::from(v[i]),
        TensorData::Int64(v) => i128::from(v[i]),
        TensorData::Bytes(_)
        | TensorData::Float16(_)
        | TensorData::Bfloat16(_)
        | TensorData::Float32(_)
        | TensorData::Float64(_) => return None,
    })
}

/// A categorical feature's labels → their index, looked up by a request's elements
/// without copying them.
#[derive(Debug, Default)]
struct Labels {
    ints: HashMap<i128, usize>,
    texts: HashMap<Vec<u8>, usize>,
}

impl Labels {
    fn new(labels: &[String], data: &TensorData) -> Self {
        let mut map = Self::default();
        for (at, label) in labels.iter().enumerate() {
            match Key::of_label(label, data) {
                Key::Int(i) => map.ints.insert(i, at),
                Key::Text(t) => map.texts.insert(t, at),
            };
        }
        map
    }

    /// The index of element `i` of `data`'s label, if it is one.
    fn find(&self, data: &TensorData, i: usize) -> Option<usize> {
        match data {
            TensorData::Bytes(v) => self.texts.get(v[i].as_slice()).copied(),
            _ => self.ints.get(&int_at(data, i)?).copied(),
        }
    }
}

/// Calls `each(feature, element index)` for every element of every feature that
/// `layout` reads element by element (`Whole`, `Columns`).
fn for_each_element(layout: Layout, len: usize, mut each: impl FnMut(usize, usize)) {
    match layout {
        Layout::Whole => (0..len).for_each(|i| each(0, i)),
        Layout::Columns { width } => (0..len).for_each(|i| each(i % width as usize, i)),
        Layout::Channels { .. } | Layout::RowMean => unreachable!("means are numeric"),
    }
}

/// Per row and feature, the mean of the feature's elements (`Channels`, `RowMean`).
fn for_each_mean(layout: Layout, tensor: &Tensor, mut each: impl FnMut(usize, f64)) {
    let rows = tensor.shape.first().copied().unwrap_or(1).max(1) as usize;
    let len = tensor.data.len();
    if len == 0 {
        return;
    }
    let per_row = len / rows;
    let features = layout.features();
    let per_feature = (per_row / features).max(1);
    for row in 0..rows {
        for f in 0..features {
            let start = row * per_row + f * per_feature;
            let (mut sum, mut n, mut nan) = (0.0, 0usize, false);
            for i in start..(start + per_feature).min(len) {
                match tensor.data.element_f64(i) {
                    Some(v) if v.is_nan() => nan = true,
                    Some(v) => {
                        sum += v;
                        n += 1;
                    }
                    None => {}
                }
            }
            each(
                f,
                if nan || n == 0 {
                    f64::NAN
                } else {
                    sum / n as f64
                },
            );
        }
    }
}

/// Builds a reference profile from whole reference data, tensor by tensor.
#[derive(Debug, Default)]
pub struct ReferenceBuilder {
    rows: Option<u64>,
    tensors: Vec<TensorProfile>,
}

impl ReferenceBuilder {
    /// Profiles reference `tensor` (every row of the sample) of the model's `side`
    /// tensor `name`; `names` name its features where the data named its columns.
    pub fn add(
        &mut self,
        side: Side,
        name: &str,
        tensor: &Tensor,
        names: Option<&[String]>,
    ) -> Result<(), ProfileError> {
        let rows = tensor.shape.first().copied().unwrap_or(1);
        if let Some(expected) = self.rows.filter(|r| *r != rows) {
            return Err(ProfileError::Inconsistent(format!(
                "reference data for {name:?} has {rows} rows; the other tensors have {expected}"
            )));
        }
        self.rows = Some(rows);
        let layout = Layout::for_shape(&tensor.shape);
        let n = layout.features();
        let name_of = |j: usize| match (layout, names) {
            (Layout::Columns { .. }, Some(names)) if names.len() == n => names[j].clone(),
            (Layout::Columns { .. } | Layout::Channels { .. }, _) => format!("{name}[{j}]"),
            _ => name.to_owned(),
        };
        let mut features = Vec::with_capacity(n);
        if matches!(layout, Layout::Whole | Layout::Columns { .. })
            && !tensor.data.dtype().is_float()
        {
            let mut counts: Vec<HashMap<Key, u64>> = vec![HashMap::new(); n];
            for_each_element(layout, tensor.data.len(), |f, i| {
                *counts[f]
                    .entry(key_at(&tensor.data, i).expect("not float"))
                    .or_default() += 1;
            });
            for (j, counts) in counts.into_iter().enumerate() {
                let count: u64 = counts.values().sum();
                let text = matches!(tensor.data, TensorData::Bytes(_) | TensorData::Bool(_));
                features.push(if text || counts.len() <= MAX_CATEGORIES {
                    categorical(name_of(j), counts, &tensor.data)
                } else {
                    let values: Vec<f64> = counts
                        .iter()
                        .flat_map(|(k, c)| {
                            let Key::Int(i) = k else {
                                unreachable!("integers")
                            };
                            std::iter::repeat_n(*i as f64, *c as usize)
                        })
                        .collect();
                    numeric(name_of(j), values, count)
                });
            }
        } else {
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); n];
            if matches!(layout, Layout::Whole | Layout::Columns { .. }) {
                for_each_element(layout, tensor.data.len(), |f, i| {
                    values[f].push(tensor.data.element_f64(i).unwrap_or(f64::NAN));
                });
            } else {
                for_each_mean(layout, tensor, |f, v| values[f].push(v));
            }
            for (j, values) in values.into_iter().enumerate() {
                let count = values.len() as u64;
                features.push(numeric(name_of(j), values, count));
            }
        }
        self.tensors.push(TensorProfile {
            name: name.to_owned(),
            side,
            layout,
            unprofiled: 0,
            features,
        });
        Ok(())
    }

    pub fn finish(self) -> Profile {
        Profile {
            schema: PROFILE_SCHEMA,
            rows: self.rows.unwrap_or(0),
            tensors: self.tensors,
        }
    }
}

fn categorical(name: String, counts: HashMap<Key, u64>, data: &TensorData) -> FeatureProfile {
    let count = counts.values().sum();
    let mut ranked: Vec<(Key, u64)> = counts.into_iter().collect();
    // Most frequent first; ties by label, so the same data always makes the same file.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.label().cmp(&b.0.label())));
    let kept = ranked.len().min(MAX_CATEGORIES);
    let other = ranked[kept..].iter().map(|(_, c)| c).sum();
    let label = |k: &Key| {
        if matches!(data, TensorData::Bool(_)) {
            bool_label(k)
        } else {
            k.label()
        }
    };
    FeatureProfile {
        name,
        count,
        missing: 0,
        values: Values::Categorical(Categorical {
            labels: ranked[..kept].iter().map(|(k, _)| label(k)).collect(),
            counts: ranked[..kept].iter().map(|(_, c)| *c).collect(),
            other,
        }),
    }
}

fn numeric(name: String, mut values: Vec<f64>, count: u64) -> FeatureProfile {
    let missing = values.iter().filter(|v| v.is_nan()).count() as u64;
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let mut sketch = Sketch::default();
    for v in &values {
        sketch.add(*v);
    }
    let mut edges: Vec<f64> = (1..BINS)
        .filter_map(|i| {
            values
                .get((values.len() * i / BINS).saturating_sub(1))
                .copied()
        })
        .collect();
    edges.dedup();
    let mut n = Numeric {
        bins: vec![0; edges.len() + 1],
        edges,
        expected_min: values.first().copied().unwrap_or(0.0),
        expected_max: values.last().copied().unwrap_or(0.0),
        out_of_range: 0,
        min: values.first().copied(),
        max: values.last().copied(),
        sum: values.iter().sum(),
        sum_squares: values.iter().map(|v| v * v).sum(),
        sketch,
    };
    for v in &values {
        let bin = n.bin(*v);
        n.bins[bin] += 1;
    }
    FeatureProfile {
        name,
        count,
        missing,
        values: Values::Numeric(Box::new(n)),
    }
}

/// Profiles requests into a window on a reference profile's bins and labels.
#[derive(Debug)]
pub struct WindowProfiler {
    window: Profile,
    /// Per tensor and categorical feature, label → index.
    lookups: Vec<Vec<Labels>>,
}

impl WindowProfiler {
    /// A profiler whose windows compare with `reference`; `dtype_of(side, name)` gives a
    /// tensor's element data, to read integer and string labels back as keys.
    pub fn new(reference: &Profile, empty_of: impl Fn(Side, &str) -> Option<TensorData>) -> Self {
        let window = reference.empty_window();
        let lookups = window
            .tensors
            .iter()
            .map(|t| {
                let data = empty_of(t.side, &t.name).unwrap_or(TensorData::Bytes(Vec::new()));
                t.features
                    .iter()
                    .map(|f| match &f.values {
                        Values::Categorical(c) => Labels::new(&c.labels, &data),
                        Values::Numeric(_) => Labels::default(),
                    })
                    .collect()
            })
            .collect();
        Self { window, lookups }
    }

    /// Profiles one request's (or response's) tensors of `side`; rows are counted once
    /// per request, from the inputs.
    pub fn observe<'a>(
        &mut self,
        side: Side,
        tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    ) {
        for (name, tensor) in tensors {
            let Some(t) = self
                .window
                .tensors
                .iter()
                .position(|p| p.side == side && p.name == name)
            else {
                continue;
            };
            self.observe_tensor(t, tensor);
        }
    }

    /// Adds `rows` examples to the window's row count.
    pub fn count_rows(&mut self, rows: u64) {
        self.window.rows += rows;
    }

    fn observe_tensor(&mut self, t: usize, tensor: &Tensor) {
        let profile = &mut self.window.tensors[t];
        if !profile.layout.fits(&tensor.shape) {
            profile.unprofiled += 1;
            return;
        }
        let layout = profile.layout;
        let features = &mut profile.features;
        let lookups = &self.lookups[t];
        match layout {
            Layout::Whole | Layout::Columns { .. } => {
                for_each_element(layout, tensor.data.len(), |f, i| {
                    let feature = &mut features[f];
                    match &mut feature.values {
                        Values::Numeric(n) => add_numeric(
                            (&mut feature.count, &mut feature.missing),
                            n,
                            tensor.data.element_f64(i).unwrap_or(f64::NAN),
                        ),
                        Values::Categorical(c) => {
                            feature.count += 1;
                            match lookups[f].find(&tensor.data, i) {
                                Some(at) => c.counts[at] += 1,
                                None => c.other += 1,
                            }
                        }
                    }
                });
            }
            Layout::Channels { .. } | Layout::RowMean => {
                for_each_mean(layout, tensor, |f, v| {
                    let feature = &mut features[f];
                    if let Values::Numeric(n) = &mut feature.values {
                        add_numeric((&mut feature.count, &mut feature.missing), n, v);
                    }
                });
            }
        }
    }

    /// The window so far, and a fresh one in its place.
    pub fn take(&mut self) -> Profile {
        let fresh = self.window.empty_window();
        std::mem::replace(&mut self.window, fresh)
    }

    pub fn rows(&self) -> u64 {
        self.window.rows
    }
}

fn add_numeric((count, missing): (&mut u64, &mut u64), n: &mut Numeric, v: f64) {
    *count += 1;
    if v.is_nan() {
        *missing += 1;
        return;
    }
    if v < n.expected_min || v > n.expected_max {
        n.out_of_range += 1;
    }
    let bin = n.bin(v);
    n.bins[bin] += 1;
    if v.is_finite() {
        n.min = Some(n.min.map_or(v, |m| m.min(v)));
        n.max = Some(n.max.map_or(v, |m| m.max(v)));
        n.sum += v;
        n.sum_squares += v * v;
        n.sketch.add(v);
    }
}
