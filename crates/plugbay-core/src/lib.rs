//! plugbay host library (work in progress).

pub mod call;
pub mod error;
pub mod platform;
pub use error::{Code, Error, Result};
