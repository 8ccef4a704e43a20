//! PLACEHOLDER: NEON kernels to come (see kernels/mod.rs).

use super::dispatch::Kernels;

/// Installs this module's kernels into the table.
pub(super) fn install(_k: &mut Kernels) {}
