//! What the two towers share: finding themselves in a full AltCLIP checkpoint or their own, loading from a model
//! directory, and quantizing their encoder layers' projections.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nn::{Linear, Queries};
use crate::options::Quantization;
use crate::weights::CheckpointView;

/// A tower ([`crate::AltClipTextModel`], [`crate::AltClipVisionModel`]): its public `load`, `from_dir` and
/// `quantize` are these provided methods.
pub(crate) trait Tower: Sized {
    /// The tower's configuration.
    type Config;
    /// The tower's prefix inside a full `AltCLIPModel` checkpoint.
    const PREFIX: &'static str;
    /// A tensor of the tower (under its own root) whose presence under [`Tower::PREFIX`] marks a checkpoint that
    /// holds the tower there rather than at the root.
    const MARKER: &'static str;

    /// Builds the tower from weights rooted at the tower.
    fn build(cfg: &Self::Config, w: &CheckpointView) -> Result<Self>;

    /// Reads the tower's configuration from `dir`'s `config.json` (a full AltCLIP config or the tower's own).
    fn read_config(dir: &Path) -> Result<Self::Config>;

    /// The tower's encoder layers.
    type Layer: EncoderLayer;

    /// The encoder layers, in order.
    fn encoder_layers(&mut self) -> &mut [Self::Layer];

    /// Builds the tower from a checkpoint holding it under [`Tower::PREFIX`] or at the root.
    fn load_from(cfg: &Self::Config, w: &CheckpointView) -> Result<Self> {
        if w.contains(&format!("{}.{}", Self::PREFIX, Self::MARKER)) {
            Self::build(cfg, &w.pp(Self::PREFIX))
        } else {
            Self::build(cfg, w)
        }
    }

    /// Loads from a directory holding `config.json` and weights.
    fn load_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = Self::read_config(dir)?;
        Self::load_from(&cfg, &CheckpointView::from_dir(dir, dtype, device)?)
    }

    /// Quantizes each encoder layer's [`EncoderLayer::projections`] to `quantization`; returns how many were.
    fn quantize_encoder(&mut self, quantization: Quantization) -> Result<usize> {
        Linear::quantize_all(
            self.encoder_layers().iter_mut().flat_map(EncoderLayer::projections),
            quantization,
        )
    }
}

/// One transformer layer of a tower's encoder.
pub(crate) trait EncoderLayer: Sized + Send {
    /// Its projections: q/k/v (fused), attention output, both MLP layers.
    fn projections(&mut self) -> impl Iterator<Item = &mut Linear>;
}

/// Loads `n` encoder layers with `load`, several at once (rayon), each quantized as soon as it is loaded when `w`
/// asks for it ([`CheckpointView::with_quantization`]): only the layers in flight hold f32 projections, so an
/// int8 model never holds the f32 one.
pub(crate) fn load_layers<L: EncoderLayer>(
    w: &CheckpointView,
    n: usize,
    load: impl Fn(usize) -> Result<L> + Sync,
) -> Result<Vec<L>> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut layer = load(i)?;
            if let Some(quantization) = w.quantization() {
                Linear::quantize_all(layer.projections(), quantization)?;
            }
            Ok(layer)
        })
        .collect()
}

/// Runs `layers` in turn from `x` through `forward(layer, x, queries)`: every layer for every token, the last for
/// the tokens `last` names. Each output is pushed to `hidden_states` where it is given. Returns the last output
/// (without layers, `x`) for the tokens `last` names.
pub(crate) fn run_layers<L>(
    layers: &[L],
    mut x: Tensor,
    mut hidden_states: Option<&mut Vec<Tensor>>,
    last: Queries,
    forward: impl Fn(&L, &Tensor, Queries) -> Result<Tensor>,
) -> Result<Tensor> {
    for (i, layer) in layers.iter().enumerate() {
        let queries = if i + 1 == layers.len() { last } else { Queries::All };
        x = forward(layer, &x, queries)?;
        if let Some(hs) = hidden_states.as_mut() {
            hs.push(x.clone());
        }
    }
    last.rows(&x)
}

/// Runs a tower's forward `f` on a worker of rayon's global pool, the CPU kernels' pool, where `device` is the CPU
/// and this thread is not one already: the forward's parallel loops then split among the workers (joins) instead
/// of each one being injected into the pool from outside it, which wakes a worker and puts the caller to sleep,
/// about 240 times in one text forward. Int8 text 1 × 77 ran 5–7 % faster on a Zen 3 and 6–10 % on a Zen 5; f32
/// and vision within ±4 % (BENCHMARKS.md, thirteenth session). On other devices, and from a worker, `f` runs here.
/// A worker waiting inside one forward may take another caller's whole forward meanwhile (rayon steals while it
/// waits): that delays the first, never blocks it, as a forward takes no lock (its tower has loaded before it, on a
/// thread and pool of their own: [`OnFirstUse::load`]).
pub(crate) fn on_worker<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// A tower loaded the first time it is used, as transformers' memory-mapped weights are in effect: loading the
/// model reads only what every call needs, the first text loads the text tower and the first image the vision
/// tower, and a job that uses one tower never loads the other (BAAI/AltCLIP: 1.2 GB each in f32). A missing or
/// misshapen tensor is reported by that first use ([`crate::AltClipModel::load_towers`] loads both now).
pub(crate) struct OnFirstUse<T: Tower> {
    tower: OnceLock<T>,
    /// Held while one thread loads: the others wait for its tower instead of loading their own.
    loading: Mutex<()>,
    cfg: T::Config,
    w: CheckpointView,
}

impl<T: Tower> OnFirstUse<T>
where
    T: Send + Sync,
    T::Config: Sync,
{
    /// A tower to build with [`Tower::build`] from `w` on first use.
    pub(crate) fn new(cfg: T::Config, w: CheckpointView) -> Self {
        Self {
            tower: OnceLock::new(),
            loading: Mutex::new(()),
            cfg,
            w,
        }
    }

    /// The tower, loaded by this call if no call has yet.
    pub(crate) fn get(&self) -> Result<&T> {
        if let Some(tower) = self.tower.get() {
            return Ok(tower);
        }
        // A panic elsewhere while loading left nothing half-built behind: `tower` is still empty.
        let _loading = self.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tower) = self.tower.get() {
            return Ok(tower);
        }
        let tower = self.load()?;
        Ok(self.tower.get_or_init(|| tower))
    }

    /// Runs `f` on the tower (loaded first if it is not yet), copying it first if a clone of the model shares it.
    pub(crate) fn with_mut<R>(this: &mut Arc<Self>, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R>
    where
        T: Clone,
        T::Config: Clone,
    {
        let this = Arc::make_mut(this);
        let mut tower = match this.tower.take() {
            Some(tower) => tower,
            None => this.load()?,
        };
        let result = f(&mut tower);
        this.tower = OnceLock::from(tower);
        result
    }

    /// Builds the tower on a thread of its own, its layers on a pool of their own. The first use may come from a
    /// rayon worker (a caller's `par_iter`): loading there would wait on rayon jobs while able to steal one of
    /// the caller's, whose own first use then waits on `loading` held by this same thread; and other workers
    /// waiting on `loading` could leave the global pool no thread to run the load's jobs.
    fn load(&self) -> Result<T> {
        let failed = |reason: String| Error::TowerLoad {
            tower: T::PREFIX,
            reason,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("altclip-load-{i}"))
            .build()
            .map_err(|e| failed(format!("cannot start the loading threads: {e}")))?;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("altclip-load".into())
                .spawn_scoped(scope, || pool.install(|| T::build(&self.cfg, &self.w)))
                .map_err(|e| failed(format!("cannot start the loading thread: {e}")))?
                .join()
                .map_err(|_| failed("the loading thread panicked".into()))?
        })
    }
}

impl<T: Tower + Clone> Clone for OnFirstUse<T>
where
    T::Config: Clone,
{
    fn clone(&self) -> Self {
        Self {
            tower: self.tower.clone(),
            loading: Mutex::new(()),
            cfg: self.cfg.clone(),
            w: self.w.clone(),
        }
    }
}

impl<T: Tower + std::fmt::Debug> std::fmt::Debug for OnFirstUse<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tower.get() {
            Some(tower) => tower.fmt(f),
            None => write!(f, "{} (loaded on first use from {:?})", T::PREFIX, self.w.checkpoint()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forwards_run_on_a_worker_and_nest_in_place() {
        let cpu = Device::Cpu;
        let here = || (std::thread::current().id(), rayon::current_thread_index());
        let (caller, index) = here();
        assert_eq!(index, None, "the test's thread is no rayon worker");
        let (ran_on, index) = on_worker(&cpu, here);
        assert!(
            ran_on != caller && index.is_some(),
            "moved onto a worker of the global pool"
        );
        // On a worker (here of another pool) it runs in place: no job, no wait.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (outer, inner) = pool.install(|| (here(), on_worker(&cpu, here)));
        assert_eq!(outer, inner);
        // The closure's value and errors come back as they are.
        let failed: Result<()> = on_worker(&cpu, || Err(Error::invalid_argument("x", "no")));
        assert!(matches!(failed, Err(Error::InvalidArgument { .. })), "{failed:?}");
    }
}
