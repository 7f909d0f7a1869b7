//! What every loader produces: a model's numbers and where they came from.

use crate::model::{Config, Weights};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, Result};

/// A loaded model: what it is, its numbers, and where they came from.
pub struct LoadedModel {
    /// What the user passed (path or `synthetic:<preset>`).
    pub id: String,
    /// `hf`, `gguf`, `llama2c` or `synthetic`.
    pub format: String,
    /// What the "unquantized" weights really are (e.g. "GGUF Q4_1 dequantized to f32").
    pub precision_note: String,
    pub config: Config,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    /// SHA-256 of the weight file(s) as read (hex), or of the preset name and seed.
    pub content_hash: String,
    /// Token ids that end generation.
    pub eos: Vec<u32>,
    /// Bytes of the weights in their stored form.
    pub file_bytes: u64,
    /// The model's chat template (Jinja), if it ships one.
    pub chat_template: Option<String>,
}

impl LoadedModel {
    /// `prompt` as a single user turn in the model's chat template, with the assistant's
    /// turn opened (what lm-eval's `--apply_chat_template` does for a zero-shot request).
    pub fn chat_prompt(&self, prompt: &str) -> Result<String> {
        let tpl =
            self.chat_template.as_deref().ok_or_else(|| anyhow!("model {} has no chat template", self.id))?;
        let mut env = minijinja::Environment::new();
        env.add_template("chat", tpl)
            .map_err(|e| anyhow!("the chat template of {} does not parse: {e}", self.id))?;
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => prompt }],
            add_generation_prompt => true,
            bos_token => "",
            eos_token => "",
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| anyhow!("rendering the chat template of {}: {e}", self.id))
    }
}
