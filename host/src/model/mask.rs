//! The attention mask of one forward: which keys each query may see.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::sync::OnceLock;

/// The mask of one forward over `t` new tokens per row after `past` cached positions:
/// causal, never into a row's left padding, and a padding query sees only itself. Held as
/// its description; the unfused attention adds it to its scores as a tensor (b, 1, t,
/// past + t) of 0 and −inf, built on first use (at 2048 tokens that is 16 MB a row, which a
/// fused kernel computing the mask itself never needs), and the fused GPU attention reads
/// each row's padding.
pub struct Mask {
    /// Left padding per row; one value serves every row.
    pad: Vec<usize>,
    past: usize,
    t: usize,
    device: Device,
    additive: OnceLock<Tensor>,
    pad_u32: OnceLock<Tensor>,
}

impl Mask {
    pub fn new(pad: &[usize], past: usize, t: usize, device: &Device) -> Result<Self> {
        if pad.is_empty() || t == 0 {
            bail!("a mask needs at least one row and one token");
        }
        Ok(Mask {
            pad: pad.to_vec(),
            past,
            t,
            device: device.clone(),
            additive: OnceLock::new(),
            pad_u32: OnceLock::new(),
        })
    }

    /// One unpadded sequence of `t` tokens, nothing cached (serves any number of rows).
    pub fn causal(t: usize, device: &Device) -> Result<Self> {
        Self::new(&[0], 0, t, device)
    }

    /// Whether query `i` (of this forward) of a row with `pad` left padding may see key `j`.
    fn sees(&self, pad: usize, i: usize, j: usize) -> bool {
        let abs = self.past + i;
        if abs < pad {
            j == abs
        } else {
            j <= abs && j >= pad
        }
    }

    /// The additive mask (rows, 1, t, past + t) in f32: 0 where a query may look, −inf
    /// elsewhere; `rows` is 1 when one padding serves every row.
    pub fn additive(&self) -> Result<&Tensor> {
        if let Some(m) = self.additive.get() {
            return Ok(m);
        }
        let total = self.past + self.t;
        let mut v = Vec::with_capacity(self.pad.len() * self.t * total);
        for &pad in &self.pad {
            for i in 0..self.t {
                v.extend((0..total).map(|j| if self.sees(pad, i, j) { 0f32 } else { f32::NEG_INFINITY }));
            }
        }
        let m = Tensor::from_vec(v, (self.pad.len(), 1, self.t, total), &self.device)?;
        Ok(self.additive.get_or_init(|| m))
    }

    /// Each row's left padding as u32 on the mask's device (one value when it serves every
    /// row), what the fused attention kernel computes the mask from.
    pub fn pad_tensor(&self) -> Result<&Tensor> {
        if let Some(p) = self.pad_u32.get() {
            return Ok(p);
        }
        let v: Vec<u32> = self.pad.iter().map(|&p| p as u32).collect();
        let p = Tensor::from_vec(v, self.pad.len(), &self.device)?;
        Ok(self.pad_u32.get_or_init(|| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_additive_mask_is_causal_and_skips_left_padding() {
        // Two rows of 3 new tokens after 1 cached position; row 1 has 2 positions of padding.
        let m = Mask::new(&[0, 2], 1, 3, &Device::Cpu).unwrap();
        let a = m.additive().unwrap().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        let seen = |r: usize, i: usize| -> Vec<usize> { (0..4).filter(|&j| a[r][i][j] == 0.0).collect() };
        // Row 0: query i at absolute position 1 + i sees keys 0..=1+i.
        assert_eq!(seen(0, 0), vec![0, 1]);
        assert_eq!(seen(0, 2), vec![0, 1, 2, 3]);
        // Row 1: position 1 is padding (sees itself only); 2 and 3 see from the padding's end.
        assert_eq!(seen(1, 0), vec![1]);
        assert_eq!(seen(1, 1), vec![2]);
        assert_eq!(seen(1, 2), vec![2, 3]);
        assert!(a.iter().flatten().flatten().all(|&x| x == 0.0 || x == f32::NEG_INFINITY));
        assert_eq!(m.pad_tensor().unwrap().to_vec1::<u32>().unwrap(), vec![0, 2]);
    }

    #[test]
    fn an_empty_mask_is_refused() {
        assert!(Mask::new(&[], 0, 3, &Device::Cpu).is_err());
        assert!(Mask::causal(0, &Device::Cpu).is_err());
    }
}
