//! What every checkpoint format reads into, and the packed-layer helpers the formats share.

use crate::loader::LoadedModel;
use crate::plugin::PackedMatrix;
use crate::quant::ModelQuantization;
use anyhow::{anyhow, Context, Result};

/// One linear layer as a checkpoint stores it, in a plugin's packed format, with the plugin
/// options that describe it.
pub struct StoredLayer {
    pub name: String,
    pub packed: PackedMatrix,
    pub options: Vec<(String, String)>,
}

/// A quantized checkpoint as stored: the model's other tensors (the linear layers are filled
/// in by [`import`]) and its linear layers packed.
pub struct Stored {
    pub model: LoadedModel,
    pub layers: Vec<StoredLayer>,
    /// What the file is, in words (e.g. "GGUF Q4_1 blocks").
    pub format: String,
    /// The plugins (by name) whose packed format the layers are.
    pub methods: &'static [&'static str],
}

/// The layers of `q` in model order, each with its packed form.
pub fn packed_layers(q: &ModelQuantization) -> Result<Vec<(&str, &PackedMatrix)>> {
    q.per_layer
        .iter()
        .map(|l| {
            q.packed
                .get(&l.name)
                .map(|p| (l.name.as_str(), p))
                .ok_or_else(|| anyhow!("internal: layer {} has no packed form", l.name))
        })
        .collect()
}

/// A packed buffer by name.
pub fn buffer<'a>(p: &'a PackedMatrix, name: &str) -> Result<&'a [u8]> {
    p.buffers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.as_slice())
        .ok_or_else(|| anyhow!("packed matrix has no `{name}` buffer"))
}

/// The packed metadata as JSON.
pub fn metadata(p: &PackedMatrix) -> Result<serde_json::Value> {
    serde_json::from_str(&p.metadata).context("packed metadata is not JSON")
}
