//! Layer groups and foldable input scales (SDK ABI 1.2): which linear layers of a block read
//! one input, what produces it, and how a per-input-column scale `s` is folded so the
//! unquantized model computes the same function: the group's layers get `W · diag(s)` and
//! the producer's output is divided by `s` (an RMSNorm's weight, or the output rows of the
//! producing linear layer). This is llm-awq's `apply_scale` (`scale_ln_fcs`, `scale_fc_fc`),
//! and what SmoothQuant-style methods fold too.

use crate::model::config::{layer_tensor, Config};
use crate::model::{LayerTensor, Stage, Weights};
use anyhow::{bail, Context, Result};
use llq_sdk::Producer;

/// One group of a block: layers reading one input, and the tensor producing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub stage: Stage,
    pub producer: String,
    pub producer_kind: Producer,
    /// Every layer reading the input (all must take the fold, quantized or not).
    pub layers: Vec<String>,
}

/// The group reading `stage`'s input in block `l`, with its producer (`None` for the block
/// output, which no linear layer of the block reads).
pub fn stage_group(l: usize, stage: Stage) -> Option<Group> {
    let p = stage.producer()?;
    let producer_kind = match p {
        LayerTensor::InputNorm | LayerTensor::PostNorm => Producer::Norm,
        _ => Producer::Linear,
    };
    Some(Group {
        stage,
        producer: layer_tensor(l, p),
        producer_kind,
        layers: stage.layers().iter().map(|&t| layer_tensor(l, t)).collect(),
    })
}

/// The groups of block `l` whose input a scale can be folded into, in block order. The
/// o group needs v's output rows to be o's input columns one for one, which grouped-query
/// attention breaks (llm-awq skips it then too: `v_proj.weight.shape == o_proj.weight.shape`).
pub fn block_groups(cfg: &Config, l: usize) -> Vec<Group> {
    let mha = cfg.linear_shape(LayerTensor::V).0 == cfg.linear_shape(LayerTensor::O).1;
    Stage::INPUTS
        .into_iter()
        .filter(|&stage| stage != Stage::OProj || mha)
        .filter_map(|stage| stage_group(l, stage))
        .collect()
}

/// Fold `s` into `g`'s producer and layers (module docs).
pub fn fold(weights: &mut Weights, g: &Group, s: &[f32]) -> Result<()> {
    let n = s.len();
    if let Some((i, v)) = s.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        bail!("input scale {i} of the group after {} is {v}; it must be finite and positive", g.producer);
    }
    for name in &g.layers {
        let w = weights.get_mut(name).with_context(|| format!("layer {name} is missing"))?;
        if w.shape.len() != 2 || w.shape[1] != n {
            bail!("layer {name} has shape {:?}; a scale of {n} values needs [_, {n}]", w.shape);
        }
        for row in w.data.chunks_mut(n) {
            row.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
        }
    }
    let p = weights.get_mut(&g.producer).with_context(|| format!("tensor {} is missing", g.producer))?;
    match g.producer_kind {
        Producer::Norm if p.data.len() == n => p.data.iter_mut().zip(s).for_each(|(v, s)| *v /= s),
        Producer::Linear if p.shape.len() == 2 && p.shape[0] == n => {
            let cols = p.shape[1];
            for (row, s) in p.data.chunks_mut(cols).zip(s) {
                row.iter_mut().for_each(|v| *v /= s);
            }
        }
        _ => bail!("producer {} has shape {:?}; it cannot take a scale of {n} values", g.producer, p.shape),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostTensor;

    #[test]
    fn grouped_query_attention_has_no_o_group() {
        let mut cfg = crate::model::config::preset("llama-3.2-1b").unwrap();
        let stages: Vec<Stage> = block_groups(&cfg, 0).iter().map(|g| g.stage).collect();
        assert_eq!(stages, [Stage::Attention, Stage::Mlp, Stage::DownProj]);
        cfg.num_key_value_heads = Some(cfg.num_attention_heads);
        let g = block_groups(&cfg, 2);
        assert_eq!(g.len(), 4);
        assert_eq!(g[1].producer, "model.layers.2.self_attn.v_proj.weight");
        assert_eq!(g[1].layers, ["model.layers.2.self_attn.o_proj.weight"]);
        assert_eq!(g[3].producer_kind, Producer::Linear);
    }

    #[test]
    fn fold_by_hand_and_bad_scales() {
        let mut w = Weights::new();
        w.insert("n".into(), HostTensor { shape: vec![2], data: vec![1.0, 4.0] });
        w.insert("a".into(), HostTensor { shape: vec![1, 2], data: vec![3.0, 5.0] });
        let g = Group {
            stage: Stage::Mlp,
            producer: "n".into(),
            producer_kind: Producer::Norm,
            layers: vec!["a".into()],
        };
        fold(&mut w, &g, &[2.0, 0.5]).unwrap();
        assert_eq!((w["n"].data.clone(), w["a"].data.clone()), (vec![0.5, 8.0], vec![6.0, 2.5]));
        assert!(fold(&mut w, &g, &[1.0, 0.0]).unwrap_err().to_string().contains("finite and positive"));
        assert!(fold(&mut w, &g, &[1.0]).unwrap_err().to_string().contains("shape"));
    }
}
