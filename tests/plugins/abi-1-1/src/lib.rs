//! Test plugin: a descriptor as an SDK before ABI 1.2 exported it (`struct_size` =
//! `size_of::<LlqPluginV1>()`, no layer-group extension), for a method that would search
//! input scales if the host could ask, and would answer `calibration_for` (ABI 1.3) by
//! panicking. A 1.3 host must load it, calibrate it by its declared kind, quantize with it,
//! and never read past its descriptor.
use llq_sdk::abi::LlqPluginV1;
use llq_sdk::{
    f32_to_bytes, Calibration, CalibrationNeed, GroupScales, LayerGroup, Options, PackedView, QuantMethod,
    Quantized, Result, Weights,
};
use std::sync::OnceLock;

#[derive(Default)]
pub struct Old;

impl QuantMethod for Old {
    const NAME: &'static str = "abi-1-1";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "f32 copy behind a v1.1-sized descriptor";
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Stats;
    const GROUP_SCALES: bool = true;
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(4 * rows * cols)
    }
    fn quantize(&self, w: &Weights, _o: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        Ok(Quantized::new(serde_json::json!({})).with_buffer("w", f32_to_bytes(w.data)))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&p.f32_buffer("w")?);
        Ok(())
    }
    fn search_scales(&self, _g: &LayerGroup, _o: &Options) -> Result<Option<GroupScales>> {
        panic!("a host must not call search_scales through a v1.1 descriptor")
    }
    fn calibration_for(&self, _o: &Options) -> CalibrationNeed {
        panic!("a host must not call calibration_for (ABI 1.3) through a v1.1 descriptor")
    }
}

/// The SDK's own (1.2) descriptor, alive for the strings and functions it points to.
fn current() -> *const LlqPluginV1 {
    static D: OnceLock<llq_sdk::ffi::Descriptor> = OnceLock::new();
    D.get_or_init(llq_sdk::ffi::Descriptor::new::<Old>).as_ptr()
}

struct V1_1(LlqPluginV1);
// SAFETY: immutable after construction; points into the static `current` descriptor.
unsafe impl Send for V1_1 {}
unsafe impl Sync for V1_1 {}

#[no_mangle]
pub extern "C" fn llq_plugin_entry() -> *const LlqPluginV1 {
    static DESC: OnceLock<V1_1> = OnceLock::new();
    &DESC
        .get_or_init(|| {
            // SAFETY: the SDK's descriptor begins with a complete `LlqPluginV1`; copying it
            // bit for bit and shrinking `struct_size` is what an older SDK exported.
            let mut d = unsafe { std::ptr::read(current()) };
            d.struct_size = std::mem::size_of::<LlqPluginV1>() as u32;
            V1_1(d)
        })
        .0
}
