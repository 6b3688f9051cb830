//! A mergeable quantile sketch: `DDSketch` (Masson, Rim and Lee, 2019) from the
//! `sketches-ddsketch` crate, at 1 % relative accuracy on the value, at most 2048 bins
//! for each sign. Serialized as `DDSketch`'s binary format (the one its Java library
//! writes) in base64, so any `DDSketch` implementation reads it.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sketches_ddsketch::{Config, DDSketch};

/// Largest encoded sketch accepted (4096 bins at most, a few bytes each).
const MAX_ENCODED: usize = 64 << 10;

#[derive(Clone)]
pub struct Sketch(DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.count())
            .field("min", &self.0.min())
            .field("max", &self.0.max())
            .finish_non_exhaustive()
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Self(DDSketch::new(Config::defaults()))
    }
}

impl PartialEq for Sketch {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_java_bytes() == other.0.to_java_bytes()
    }
}

impl Sketch {
    /// Adds a finite value (the caller counts NaN and infinities apart).
    pub fn add(&mut self, value: f64) {
        debug_assert!(value.is_finite());
        self.0.add(value);
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The value at rank `q` (0–1), within 1 % of the true one; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// Adds `other`'s values. Sketches made here always share one configuration; one
    /// read from elsewhere was checked to have it when it was decoded.
    pub fn merge(&mut self, other: &Self) {
        self.0
            .merge(&other.0)
            .expect("sketches share one configuration");
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.to_java_bytes())
    }

    fn decode(text: &str) -> Result<Self, String> {
        if text.len() > MAX_ENCODED * 4 / 3 + 4 {
            return Err(format!(
                "a sketch of {} bytes is larger than any this version writes",
                text.len()
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("a sketch is not base64: {e}"))?;
        let decoded = DDSketch::from_java_bytes(&bytes)
            .map_err(|e| format!("a sketch is not valid: {e:?}"))?;
        // Merging into an empty sketch of this version's configuration refuses one of
        // another accuracy, which could not be merged or compared later.
        let mut sketch = Self::default();
        sketch
            .0
            .merge(&decoded)
            .map_err(|_| "a sketch has another accuracy than this version's 1 %".to_owned())?;
        if [decoded.min(), decoded.max(), decoded.sum()]
            .into_iter()
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Err("a sketch holds a value that is not finite".to_owned());
        }
        Ok(sketch)
    }
}

impl Serialize for Sketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_and_survive_a_round_trip() {
        let mut s = Sketch::default();
        for i in 1..=1000 {
            s.add(f64::from(i));
            s.add(-f64::from(i));
        }
        s.add(0.0);
        let median = s.quantile(0.5).unwrap();
        assert!(median.abs() < 1e-6, "{median}");
        let p90 = s.quantile(0.95).unwrap();
        assert!((p90 - 900.0).abs() <= 9.5, "{p90}");
        let json = serde_json::to_string(&s).unwrap();
        let back: Sketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count(), 2001);
        assert_eq!(back.quantile(0.95), s.quantile(0.95));
    }

    #[test]
    fn merged_sketches_count_both() {
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        (0..100).for_each(|i| a.add(f64::from(i)));
        (100..300).for_each(|i| b.add(f64::from(i)));
        a.merge(&b);
        assert_eq!(a.count(), 300);
        assert!((a.quantile(0.5).unwrap() - 150.0).abs() < 2.0);
    }

    #[test]
    fn garbage_and_oversized_sketches_are_refused() {
        for bad in ["\"not base64!\"", "\"AAAA\"", "\"/////w==\""] {
            assert!(serde_json::from_str::<Sketch>(bad).is_err(), "{bad}");
        }
        let huge = format!("\"{}\"", "A".repeat(200_000));
        let e = serde_json::from_str::<Sketch>(&huge).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
