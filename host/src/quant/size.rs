//! Size accounting: every byte a quantized model stores.

use super::model::ModelQuantization;
use crate::loader::LoadedModel;
use crate::results::schema::Size;

/// What the model's weights take as stored: the quantized layers packed (without a plugin:
/// `unquantized_bytes` each, the width the device computes in — 4 for f32 on the CPU, 2 for
/// bf16 on a GPU), everything else at 2 bytes per parameter (fp16, as transformers +
/// bitsandbytes keep it).
pub fn model_size(m: &LoadedModel, q: Option<&ModelQuantization>, unquantized_bytes: u64) -> Size {
    let params: u64 = m.weights.values().map(|t| t.data.len() as u64).sum();
    let (qp, qb) = match q {
        Some(q) => (q.quantized_params, q.quantized_bytes),
        None => {
            let p: u64 = m.config.linear_layers().iter().map(|(_, r, c)| (*r * *c) as u64).sum();
            (p, p * unquantized_bytes)
        }
    };
    let other = (params - qp) * 2;
    Size {
        params,
        quantized_params: qp,
        quantized_bytes: qb,
        other_bytes: other,
        total_bytes: qb + other,
        bits_per_weight: 8.0 * qb as f64 / qp.max(1) as f64,
        bits_per_param_overall: 8.0 * (qb + other) as f64 / params.max(1) as f64,
    }
}
