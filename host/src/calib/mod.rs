//! Calibration data: the text a calibrated method sees ([`text`]: files, the default
//! Gutenberg calibration books, token windows) and what is recorded per linear layer while
//! it runs through the model ([`stats`]: statistics, raw rows, the input Hessian).

pub mod stats;
pub mod text;
