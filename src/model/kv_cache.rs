//! Keys and values of every position seen so far, per layer, so decoding a
//! token attends to the past without recomputing it.
//!
//! Layout per layer: `[kv_head][position][dim]`, so one head's keys for a run
//! of positions are contiguous (what the attention loop streams through).

use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::Serialize;

/// Element type of the cache. F16 (llama.cpp's default) halves its memory;
/// F32 is the exact path the parity tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl KvType {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f16" => Some(Self::F16),
            "f32" => Some(Self::F32),
            _ => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// One tensor of the cache (all keys or all values of a layer).
#[derive(Debug, Clone)]
pub enum KvStore {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvStore {
    fn new(ty: KvType, len: usize) -> Self {
        match ty {
            // Zeroed allocations: the pages are only committed once written,
            // so a large context (or many slots) costs memory as it fills.
            KvType::F32 => Self::F32(bytemuck::zeroed_vec(len)),
            KvType::F16 => Self::F16(bytemuck::zeroed_vec(len)),
        }
    }

    fn write(&mut self, at: usize, values: &[f32]) {
        match self {
            Self::F32(v) => v[at..at + values.len()].copy_from_slice(values),
            Self::F16(v) => v[at..at + values.len()].convert_from_f32_slice(values),
        }
    }
}

/// The cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    keys: Vec<KvStore>,
    values: Vec<KvStore>,
}

impl KvCache {
    pub fn new(
        ty: KvType,
        n_ctx: usize,
        n_layers: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> Self {
        let k_len = n_head_kv * n_ctx * head_dim_k;
        let v_len = n_head_kv * n_ctx * head_dim_v;
        Self {
            ty,
            n_ctx,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            keys: (0..n_layers).map(|_| KvStore::new(ty, k_len)).collect(),
            values: (0..n_layers).map(|_| KvStore::new(ty, v_len)).collect(),
        }
    }

    /// Bytes this cache holds for `n_ctx` positions of a model shaped like this.
    pub fn bytes_for(
        ty: KvType,
        n_ctx: usize,
        n_layers: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> usize {
        n_layers * n_head_kv * n_ctx * (head_dim_k + head_dim_v) * ty.bytes()
    }

    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Positions the cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Stores one position's keys (`n_head_kv × head_dim_k`) and values.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        for h in 0..self.n_head_kv {
            let (dk, dv) = (self.head_dim_k, self.head_dim_v);
            self.keys[layer].write((h * self.n_ctx + pos) * dk, &k[h * dk..(h + 1) * dk]);
            self.values[layer].write((h * self.n_ctx + pos) * dv, &v[h * dv..(h + 1) * dv]);
        }
    }

    /// The keys and values of `layer`, for [`super::attention`].
    pub(super) fn layer(&self, layer: usize) -> (&KvStore, &KvStore) {
        (&self.keys[layer], &self.values[layer])
    }
}
