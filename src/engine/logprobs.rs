//! Log-probabilities of generated tokens under the model's own distribution:
//! log-softmax of the raw logits (before bias, penalties or temperature), as
//! OpenAI's `logprobs` reports them.

use crate::tokenizer::TokenId;
use serde::Serialize;

/// One generated token's log-probability and the most likely alternatives at
/// its position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: TokenId,
    pub logprob: f32,
    /// The `n` most likely tokens at this position, most likely first (ties
    /// by lower id); empty when no alternatives were asked for.
    pub top: Vec<(TokenId, f32)>,
}

/// The log-probability of `chosen` and the `top_n` most likely tokens under
/// `log_softmax(logits)`. Non-finite logits count as probability 0.
pub fn token_logprob(logits: &[f32], chosen: TokenId, top_n: usize) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    // Sum in f64: with a 256k vocabulary f32 loses digits the answer shows.
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| libm::exp(f64::from(l - max)))
        .sum();
    let log_z = f64::from(max) + sum.ln();
    let logprob_of = |l: f32| {
        if l.is_finite() {
            (f64::from(l) - log_z) as f32
        } else {
            f32::NEG_INFINITY
        }
    };
    let logprob = logits
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |&l| logprob_of(l));
    let mut top: Vec<(TokenId, f32)> = Vec::new();
    if top_n > 0 {
        // A bounded insertion list: top_n is small (OpenAI allows up to 20).
        for (id, &l) in (0..).zip(logits) {
            if !l.is_finite() {
                continue;
            }
            if top.len() == top_n && l <= top[top_n - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, other)| other >= l);
            top.insert(at, (id, l));
            top.truncate(top_n);
        }
        for entry in &mut top {
            entry.1 = logprob_of(entry.1);
        }
    }
    TokenLogprob {
        token: chosen,
        logprob,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_the_chosen_token_and_the_top_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, f32::NEG_INFINITY, 3.0];
        let z: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|l| l.exp()).sum();
        let r = token_logprob(&logits, 2, 3);
        assert!((f64::from(r.logprob) - (2.0 - z.ln())).abs() < 1e-6);
        // Ties keep the lower id first.
        let ids: Vec<TokenId> = r.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 4, 2]);
        assert!((f64::from(r.top[0].1) - (3.0 - z.ln())).abs() < 1e-6);
        assert_eq!(token_logprob(&logits, 3, 0).logprob, f32::NEG_INFINITY);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
        // The probabilities of all tokens sum to one.
        let total: f64 = (0..5)
            .map(|t| f64::from(token_logprob(&logits, t, 0).logprob).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
