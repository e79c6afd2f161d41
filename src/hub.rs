//! Resolving a model id (`BAAI/AltCLIP`) or a local directory to local files, online or offline.
//!
//! [`resolve`] returns a [`ModelFiles`]: `config.json`, the weights (sharded safetensors, then `model.safetensors`,
//! then `pytorch_model.bin`) and whichever processor files the model has, all in one directory — a snapshot of the
//! Hugging Face cache, laid out exactly as Python's `huggingface_hub` lays it out, so the two share downloads and
//! every `from_dir` loader of this crate works on [`ModelFiles::dir`].
//!
//! ```text
//! $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
//! └── models--BAAI--AltCLIP
//!     ├── refs/main            ← holds a commit hash;  refs/pr/7 lives at refs/refs/pr/7
//!     ├── snapshots/<commit>/  ← config.json, model.safetensors, ... (links into blobs/)
//!     └── blobs/
//! ```
//!
//! * **Local directory**: when `repo_id` names an existing directory it is used as it is; nothing is fetched.
//! * **Offline** (`HF_HUB_OFFLINE=1`, or [`HubOptions::with_offline`]): files come from the cache only, with no
//!   network call at all; `refs/<revision>` maps a branch, tag or `refs/pr/N` to its commit, and a commit hash
//!   names its snapshot directly. A missing file is [`Error::OfflineMissing`], naming the file, the cache and
//!   how to fill it.
//! * **Online**: one call to the hub's API pins the revision to a commit and lists the repository's files; the
//!   chosen files are then taken from that commit's snapshot when already cached, or downloaded into it. Hub
//!   failures are [`Error::Hub`], naming the repository, revision and file, with the hub's error code (an unknown
//!   repository, revision or file reads as such). When the hub cannot be reached at all, a complete snapshot
//!   already in the cache is used instead, as `huggingface_hub` does.
//!
//! BAAI/AltCLIP's `main` branch has only `pytorch_model.bin`; a safetensors conversion lives on `refs/pr/7`
//! (`HubOptions::default().with_revision("refs/pr/7")`). Both load.
//!
//! ```no_run
//! use altclip::hub::{resolve, HubOptions};
//! use candle_core::{DType, Device};
//!
//! # fn main() -> altclip::Result<()> {
//! let files = resolve("BAAI/AltCLIP", &HubOptions::new().with_revision("refs/pr/7").with_progress(true))?;
//! let model = files.load_model(DType::F32, &Device::Cpu)?;
//! println!("loaded {} from {}", files.repo_id(), files.dir().display());
//! # Ok(())
//! # }
//! ```
//!
//! ## Why hf-hub 0.4 and not 1.0
//!
//! hf-hub 1.0 is an async rewrite (reqwest 0.13, tokio, the `hf-xet` transfer stack) whose blocking client is a
//! wrapper that drives a tokio runtime; this crate is synchronous and has no other use for an async runtime, so
//! 1.0 would roughly double the dependency tree. hf-hub 0.4 has a small synchronous client over `ureq` 2 with
//! rustls (no OpenSSL), is what candle's examples and most candle-based crates use, and shares the cache layout.
//! Its gaps are filled here: it ignores `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and `HF_TOKEN`, and it looks a
//! non-commit revision up in the cache without a network call, so this module does the cache look-ups itself and
//! uses hf-hub only to talk to the hub.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::files::{
    CONFIG_FILE, PREPROCESSOR_CONFIG_FILE, PROCESSOR_FILES, PYTORCH_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX,
    SENTENCEPIECE_FILE, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use crate::model::AltClipModel;
use crate::weights::{shards_from_index, CheckpointFiles};

/// The plain-data options live in [`crate::options`] (compiled without this feature too); re-exported here.
pub use crate::options::HubOptions;

/// The environment variables [`resolve`] reads, captured once so that they can also be given explicitly
/// ([`resolve_with_env`]) — tests then need not mutate the process environment.
///
/// Empty values count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`): the hub cache directory; wins over `HF_HOME`.
    pub hf_hub_cache: Option<String>,
    /// `HF_HOME`: the Hugging Face home; the cache is `$HF_HOME/hub`, the token file `$HF_HOME/token`.
    pub hf_home: Option<String>,
    /// `XDG_CACHE_HOME`: without `HF_HOME`, the home is `$XDG_CACHE_HOME/huggingface`.
    pub xdg_cache_home: Option<String>,
    /// The user's home directory (`HOME`, or `USERPROFILE` on Windows).
    pub home: Option<PathBuf>,
    /// `HF_HUB_OFFLINE`: `1`, `ON`, `YES` or `TRUE` (any case) turn offline mode on.
    pub hf_hub_offline: Option<String>,
    /// `HF_TOKEN`: access token.
    pub hf_token: Option<String>,
    /// `HF_ENDPOINT`: hub endpoint.
    pub hf_endpoint: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl HubEnv {
    /// Reads the variables from the process environment.
    pub fn from_process() -> Self {
        let var = |name: &str| non_empty(std::env::var(name).ok());
        Self {
            hf_hub_cache: var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")),
            hf_home: var("HF_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: std::env::var_os("HOME")
                .or_else(|| std::env::var_os("USERPROFILE"))
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
            hf_hub_offline: var("HF_HUB_OFFLINE"),
            hf_token: var("HF_TOKEN"),
            hf_endpoint: var("HF_ENDPOINT"),
        }
    }

    /// The hub cache directory these variables select (see [`cache_dir_from_env`]).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        cache_dir_from_env(
            self.hf_hub_cache.as_deref(),
            self.hf_home.as_deref(),
            self.xdg_cache_home.as_deref(),
            self.home.as_deref(),
        )
    }

    /// The Hugging Face home: `$HF_HOME`, `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`.
    pub fn hf_home_dir(&self) -> Option<PathBuf> {
        hf_home_from_env(
            self.hf_home.as_deref(),
            self.xdg_cache_home.as_deref(),
            self.home.as_deref(),
        )
    }

    /// True when `HF_HUB_OFFLINE` turns offline mode on.
    pub fn offline(&self) -> bool {
        is_true(self.hf_hub_offline.as_deref())
    }

    /// The token: `HF_TOKEN`, else the token file in the Hugging Face home. A missing file (or home) means no
    /// token; a token file that exists but cannot be read is an error, as in `huggingface_hub`.
    pub fn token(&self) -> Result<Option<String>> {
        if let Some(t) = non_empty(self.hf_token.clone()) {
            return Ok(Some(t));
        }
        let Some(path) = self.hf_home_dir().map(|h| h.join("token")) else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(non_empty(Some(text.trim().to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// `huggingface_hub`'s reading of a boolean variable: `1`, `ON`, `YES`, `TRUE` in any case are true.
pub fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

fn expand_home(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') || rest.starts_with('\\') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

fn hf_home_from_env(hf_home: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    let hf_home = hf_home.filter(|s| !s.is_empty());
    let xdg = xdg_cache_home.filter(|s| !s.is_empty());
    match (hf_home, xdg) {
        (Some(h), _) => Some(expand_home(h, home)),
        (None, Some(x)) => Some(expand_home(x, home).join("huggingface")),
        (None, None) => home.map(|h| h.join(".cache").join("huggingface")),
    }
}

/// The hub cache directory, as `huggingface_hub` computes it: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `<home>/.cache/huggingface/hub`. A leading `~` is expanded; empty
/// values count as unset. `None` only when nothing is set and there is no home directory.
pub fn cache_dir_from_env(
    hf_hub_cache: Option<&str>,
    hf_home: Option<&str>,
    xdg_cache_home: Option<&str>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match hf_hub_cache.filter(|s| !s.is_empty()) {
        Some(cache) => Some(expand_home(cache, home)),
        None => hf_home_from_env(hf_home, xdg_cache_home, home).map(|h| h.join("hub")),
    }
}

/// The cache folder of a model repository: `models--ORG--NAME`.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// True for a full 40-hex-digit commit hash.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a [`ModelFiles`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory given as the model id.
    LocalDir,
    /// A snapshot of the hub cache (found offline or filled online).
    Cache {
        /// The revision asked for.
        revision: String,
        /// The commit it resolved to (the snapshot's name).
        commit: String,
        /// The hub cache directory.
        cache_dir: PathBuf,
    },
}

/// The local files of a model, all in one directory ([`ModelFiles::dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    repo_id: String,
    source: ModelSource,
    dir: PathBuf,
    config: PathBuf,
    weights: CheckpointFiles,
    processor: Vec<(&'static str, PathBuf)>,
}

impl ModelFiles {
    /// The directory holding every file: the snapshot directory, or the local directory given.
    /// `AltClipModel::from_dir` and the processors' `from_dir` loaders work on it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model id (or directory) resolved.
    pub fn repo_id(&self) -> &str {
        &self.repo_id
    }

    /// Where the files came from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// The commit hash of the snapshot; `None` for a local directory.
    pub fn commit(&self) -> Option<&str> {
        match &self.source {
            ModelSource::Cache { commit, .. } => Some(commit),
            ModelSource::LocalDir => None,
        }
    }

    /// `config.json`.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The weight files.
    pub fn weights(&self) -> &CheckpointFiles {
        &self.weights
    }

    /// A processor file by name (one of [`PROCESSOR_FILES`]), when the model has it.
    pub fn processor_file(&self, name: &str) -> Option<&Path> {
        self.processor
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.as_path())
    }

    /// `preprocessor_config.json`, when present.
    pub fn preprocessor_config(&self) -> Option<&Path> {
        self.processor_file(PREPROCESSOR_CONFIG_FILE)
    }

    /// `tokenizer.json`, when present.
    pub fn tokenizer(&self) -> Option<&Path> {
        self.processor_file(TOKENIZER_FILE)
    }

    /// `tokenizer_config.json`, when present.
    pub fn tokenizer_config(&self) -> Option<&Path> {
        self.processor_file(TOKENIZER_CONFIG_FILE)
    }

    /// `special_tokens_map.json`, when present.
    pub fn special_tokens_map(&self) -> Option<&Path> {
        self.processor_file(SPECIAL_TOKENS_MAP_FILE)
    }

    /// `sentencepiece.bpe.model`, when present.
    pub fn sentencepiece_model(&self) -> Option<&Path> {
        self.processor_file(SENTENCEPIECE_FILE)
    }

    /// Loads the model from these files.
    pub fn load_model(&self, dtype: DType, device: &Device) -> Result<AltClipModel> {
        AltClipModel::from_dir(&self.dir, dtype, device)
    }

    fn processor_in(dir: &Path) -> Vec<(&'static str, PathBuf)> {
        PROCESSOR_FILES
            .iter()
            .map(|&name| (name, dir.join(name)))
            .filter(|(_, p)| p.is_file())
            .collect()
    }
}

/// Resolves `repo_id` (a hub model id such as `BAAI/AltCLIP`, or an existing local directory) to local files,
/// reading the environment for unset options (see the [module docs](self)).
pub fn resolve(repo_id: &str, opts: &HubOptions) -> Result<ModelFiles> {
    resolve_with_env(repo_id, opts, &HubEnv::from_process())
}

/// [`resolve`] with the environment given explicitly.
pub fn resolve_with_env(repo_id: &str, opts: &HubOptions, env: &HubEnv) -> Result<ModelFiles> {
    let local = Path::new(repo_id);
    if local.is_dir() {
        return from_local_dir(repo_id, local);
    }
    let hub_err = |reason: String| Error::Hub {
        repo: repo_id.into(),
        revision: opts.revision.clone(),
        file: None,
        reason,
    };
    validate_repo_id(repo_id).map_err(hub_err)?;
    validate_revision(&opts.revision).map_err(hub_err)?;
    let cache_dir = match &opts.cache_dir {
        Some(dir) => dir.clone(),
        None => env.cache_dir().ok_or_else(|| {
            hub_err("no cache directory: set HF_HUB_CACHE or HF_HOME, or pass HubOptions::with_cache_dir".into())
        })?,
    };
    let cache = CacheRepo {
        repo_id,
        revision: &opts.revision,
        cache_dir: &cache_dir,
    };
    if opts.offline.unwrap_or_else(|| env.offline()) {
        return cache.resolve_offline();
    }
    resolve_online(&cache, opts, env)
}

fn from_local_dir(repo_id: &str, dir: &Path) -> Result<ModelFiles> {
    let config = dir.join(CONFIG_FILE);
    if !config.is_file() {
        return Err(Error::io(
            &config,
            std::io::Error::new(std::io::ErrorKind::NotFound, "the model directory has no config.json"),
        ));
    }
    Ok(ModelFiles {
        repo_id: repo_id.into(),
        source: ModelSource::LocalDir,
        dir: dir.to_path_buf(),
        config,
        weights: CheckpointFiles::find(dir)?,
        processor: ModelFiles::processor_in(dir),
    })
}

fn validate_repo_id(repo_id: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && !p.contains("..")
            && !p.contains("--")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "`{repo_id}` is neither an existing directory nor a valid model id (`NAME` or `ORG/NAME`, letters, digits, \
             `-`, `_`, `.`)"
        ));
    }
    Ok(())
}

fn validate_revision(revision: &str) -> std::result::Result<(), String> {
    let ok = !revision.is_empty()
        && !revision.starts_with('/')
        && !revision.contains('\\')
        && revision.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("`{revision}` is not a valid revision"))
    }
}

/// One repository at one revision in one cache directory.
struct CacheRepo<'a> {
    repo_id: &'a str,
    revision: &'a str,
    cache_dir: &'a Path,
}

impl CacheRepo<'_> {
    fn repo_dir(&self) -> PathBuf {
        self.cache_dir.join(repo_folder_name(self.repo_id))
    }

    fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.repo_dir().join("snapshots").join(commit)
    }

    /// The cached commit for the revision, as `huggingface_hub.try_to_load_from_cache` finds it:
    /// `refs/<revision>` when that file exists, else the revision itself; `None` without such a snapshot.
    fn cached_commit(&self) -> Result<Option<String>> {
        let ref_file = self.repo_dir().join("refs").join(self.revision);
        let commit = match std::fs::read_to_string(&ref_file) {
            Ok(text) => text.trim().to_string(),
            // No ref (a commit hash, or nothing cached yet; the snapshot test below tells which).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.revision.to_string(),
            Err(e) => return Err(Error::io(ref_file, e)),
        };
        Ok((validate_revision(&commit).is_ok() && self.snapshot_dir(&commit).is_dir()).then_some(commit))
    }

    /// Records `refs/<revision>` → `commit`, as `huggingface_hub` does for any revision that is not the commit.
    fn write_ref(&self, commit: &str) -> Result<()> {
        if self.revision == commit {
            return Ok(());
        }
        let ref_file = self.repo_dir().join("refs").join(self.revision);
        if std::fs::read_to_string(&ref_file).is_ok_and(|t| t.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = ref_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&ref_file, commit).map_err(|e| Error::io(&ref_file, e))
    }

    fn missing(&self, file: impl Into<String>) -> Error {
        Error::OfflineMissing {
            repo: self.repo_id.into(),
            revision: self.revision.into(),
            file: file.into(),
            cache_dir: self.cache_dir.to_path_buf(),
        }
    }

    /// Resolves from the cache only.
    fn resolve_offline(&self) -> Result<ModelFiles> {
        let commit = self.cached_commit()?.ok_or_else(|| self.missing(CONFIG_FILE))?;
        let dir = self.snapshot_dir(&commit);
        let config = dir.join(CONFIG_FILE);
        if !config.is_file() {
            return Err(self.missing(CONFIG_FILE));
        }
        let weights = match CheckpointFiles::find(&dir) {
            Ok(w) => w,
            Err(Error::NoWeights { .. }) => {
                return Err(self.missing(format!(
                    "weights ({SAFETENSORS_INDEX}, {SAFETENSORS_FILE} or {PYTORCH_FILE})"
                )))
            }
            Err(e) => return Err(e),
        };
        if let CheckpointFiles::Safetensors(shards) = &weights {
            if let Some(absent) = shards.iter().find(|p| !p.is_file()) {
                return Err(self.missing(shard_name(&dir, absent)?));
            }
        }
        let processor = ModelFiles::processor_in(&dir);
        Ok(self.snapshot_files(commit, dir, config, weights, processor))
    }

    /// The [`ModelFiles`] of snapshot `commit` (directory `dir`).
    fn snapshot_files(
        &self,
        commit: String,
        dir: PathBuf,
        config: PathBuf,
        weights: CheckpointFiles,
        processor: Vec<(&'static str, PathBuf)>,
    ) -> ModelFiles {
        ModelFiles {
            repo_id: self.repo_id.into(),
            source: ModelSource::Cache {
                revision: self.revision.into(),
                commit,
                cache_dir: self.cache_dir.to_path_buf(),
            },
            dir,
            config,
            weights,
            processor,
        }
    }

    fn hub_error(&self, file: Option<&str>, reason: String) -> Error {
        Error::Hub {
            repo: self.repo_id.into(),
            revision: self.revision.into(),
            file: file.map(String::from),
            reason,
        }
    }
}

/// A shard's name in the repository (`/`-separated, relative to the snapshot `dir` that holds the index). The
/// index names shards relative to itself; one that is absolute or climbs out with `..` is an error, not a path
/// to follow.
fn shard_name(dir: &Path, shard: &Path) -> Result<String> {
    let outside = || Error::WeightFile {
        path: dir.join(SAFETENSORS_INDEX),
        reason: format!(
            "the index names shard `{}`, which is not a file inside the repository",
            shard.display()
        ),
    };
    let relative = shard.strip_prefix(dir).map_err(|_| outside())?;
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    Ok(relative.to_string_lossy().replace('\\', "/"))
}

/// An hf-hub error, read as this crate reports it.
struct HubFailure {
    /// The sentence for [`Error::Hub`]'s `reason`, with the hub's error code and message when it sent them.
    reason: String,
    /// The hub could not be reached at all (no HTTP answer): a complete cached snapshot may stand in.
    unreachable: bool,
}

impl HubFailure {
    fn of(err: &ApiError) -> Self {
        let (reason, unreachable) = match err {
            ApiError::RequestError(e) => match e.as_ref() {
                ureq::Error::Status(code, response) => (describe_status(*code, response), false),
                ureq::Error::Transport(t) => (
                    format!(
                        "network error: {t}; set HF_HUB_OFFLINE=1 (or HubOptions::with_offline(true)) to use the \
                         local cache only"
                    ),
                    true,
                ),
            },
            other => (other.to_string(), false),
        };
        Self { reason, unreachable }
    }
}

/// An HTTP error answer as a sentence, naming the hub's `X-Error-Code` and `X-Error-Message` when present.
fn describe_status(code: u16, response: &ureq::Response) -> String {
    let hub_code = response.header("x-error-code").unwrap_or_default();
    let hub_msg = response.header("x-error-message").unwrap_or_default();
    let what = match (hub_code, code) {
        ("RepoNotFound" | "RepositoryNotFound", _) => "repository not found (or private/gated: pass a token)".into(),
        ("RevisionNotFound", _) => "revision not found".into(),
        ("EntryNotFound", _) => "file not found in the repository".into(),
        ("GatedRepo", _) => "gated repository: accept its terms on the hub and pass a token".into(),
        (_, 401) => "unauthorized: the repository does not exist, or is private or gated and needs a token \
                     (HF_TOKEN or HubOptions::with_token)"
            .into(),
        (_, 403) => "forbidden: the token has no access to this repository".into(),
        (_, 404) => "not found".into(),
        (_, code) => format!("HTTP status {code}"),
    };
    let mut reason = format!("{what} (HTTP {code}");
    if !hub_code.is_empty() {
        reason.push_str(&format!(", {hub_code}"));
    }
    reason.push(')');
    if !hub_msg.is_empty() {
        reason.push_str(&format!(": {hub_msg}"));
    }
    reason
}

/// Online: pin the revision to a commit, then fetch config, weights and processor files into that snapshot.
fn resolve_online(cache: &CacheRepo<'_>, opts: &HubOptions, env: &HubEnv) -> Result<ModelFiles> {
    let api = build_api(cache, opts, env)?;
    let snapshot = match PinnedSnapshot::pin(cache, &api)? {
        Pinned::Online(snapshot) => snapshot,
        Pinned::FromCache(files) => return Ok(files),
    };
    let config = snapshot.fetch_config()?;
    let weights = snapshot.fetch_weights()?;
    let processor = snapshot.fetch_processor_files()?;
    snapshot.record_ref()?;
    let PinnedSnapshot { commit, dir, .. } = snapshot;
    Ok(cache.snapshot_files(commit, dir, config, weights, processor))
}

/// The hf-hub client for this cache, with progress bars, token and endpoint from the options or the environment.
fn build_api(cache: &CacheRepo<'_>, opts: &HubOptions, env: &HubEnv) -> Result<Api> {
    let token = match &opts.token {
        Some(t) => Some(t.clone()),
        None => env.token()?,
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.cache_dir.to_path_buf()))
        .with_progress(opts.progress)
        .with_token(token)
        .with_user_agent("altclip", env!("CARGO_PKG_VERSION"));
    if let Some(endpoint) = opts.endpoint.clone().or_else(|| env.hf_endpoint.clone()) {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    builder
        .build()
        .map_err(|e| cache.hub_error(None, HubFailure::of(&e).reason))
}

/// What pinning the revision gave: a commit to fetch from, or (hub unreachable) a complete cached snapshot.
enum Pinned<'a> {
    Online(PinnedSnapshot<'a>),
    FromCache(ModelFiles),
}

/// One commit's snapshot, filled from the hub: the repository's file list at that commit and a client pinned to it.
struct PinnedSnapshot<'a> {
    cache: &'a CacheRepo<'a>,
    commit: String,
    listed: BTreeSet<String>,
    dir: PathBuf,
    /// Pinned to the commit so that every file lands in the same snapshot even if the branch moves meanwhile.
    repo: ApiRepo,
    /// hf-hub records `refs/<revision>` after each download; pinned to the commit, that is a `refs/<commit>`
    /// file huggingface_hub never writes (and `huggingface-cli scan-cache` would list): removed at the end
    /// unless it was there before.
    had_commit_ref: bool,
}

impl<'a> PinnedSnapshot<'a> {
    /// One call to the hub's API: the revision's commit and file list.
    fn pin(cache: &'a CacheRepo<'a>, api: &Api) -> Result<Pinned<'a>> {
        let repo_at = |rev: &str| api.repo(Repo::with_revision(cache.repo_id.into(), RepoType::Model, rev.into()));
        let info = match repo_at(cache.revision).info() {
            Ok(info) => info,
            Err(e) => {
                let failure = HubFailure::of(&e);
                if failure.unreachable {
                    // As huggingface_hub does: a complete cached snapshot stands in for an unreachable hub. An
                    // incomplete one is no answer, and the network error is what to report.
                    if let Ok(files) = cache.resolve_offline() {
                        return Ok(Pinned::FromCache(files));
                    }
                }
                return Err(cache.hub_error(None, failure.reason));
            }
        };
        let commit = info.sha.trim().to_string();
        if !is_commit_hash(&commit) {
            return Err(cache.hub_error(None, format!("the hub answered with `{commit}`, not a commit hash")));
        }
        Ok(Pinned::Online(Self {
            cache,
            listed: info.siblings.into_iter().map(|s| s.rfilename).collect(),
            dir: cache.snapshot_dir(&commit),
            had_commit_ref: cache.repo_dir().join("refs").join(&commit).exists(),
            repo: repo_at(&commit),
            commit,
        }))
    }

    fn has(&self, file: &str) -> bool {
        self.listed.contains(file)
    }

    /// The file from the snapshot when already cached, else downloaded into it.
    fn fetch(&self, file: &str) -> Result<PathBuf> {
        let cached = self.dir.join(file);
        if cached.is_file() {
            return Ok(cached);
        }
        self.repo
            .download(file)
            .map_err(|e| self.cache.hub_error(Some(file), HubFailure::of(&e).reason))
    }

    fn fetch_config(&self) -> Result<PathBuf> {
        if !self.has(CONFIG_FILE) {
            let reason = "the repository has no config.json (is it a transformers model?)";
            return Err(self.cache.hub_error(Some(CONFIG_FILE), reason.into()));
        }
        self.fetch(CONFIG_FILE)
    }

    /// Sharded safetensors, then `model.safetensors`, then `pytorch_model.bin` (as `CheckpointFiles::find`).
    fn fetch_weights(&self) -> Result<CheckpointFiles> {
        if self.has(SAFETENSORS_INDEX) {
            let index = self.fetch(SAFETENSORS_INDEX)?;
            let mut shards = Vec::new();
            for shard in shards_from_index(&index)? {
                shards.push(self.fetch(&shard_name(&self.dir, &shard)?)?);
            }
            Ok(CheckpointFiles::Safetensors(shards))
        } else if self.has(SAFETENSORS_FILE) {
            Ok(CheckpointFiles::Safetensors(vec![self.fetch(SAFETENSORS_FILE)?]))
        } else if self.has(PYTORCH_FILE) {
            Ok(CheckpointFiles::Pytorch(self.fetch(PYTORCH_FILE)?))
        } else {
            let reason =
                format!("the revision has no weights ({SAFETENSORS_INDEX}, {SAFETENSORS_FILE} or {PYTORCH_FILE})");
            Err(self.cache.hub_error(Some(SAFETENSORS_FILE), reason))
        }
    }

    /// Whichever of [`PROCESSOR_FILES`] the repository has.
    fn fetch_processor_files(&self) -> Result<Vec<(&'static str, PathBuf)>> {
        PROCESSOR_FILES
            .into_iter()
            .filter(|name| self.has(name))
            .map(|name| Ok((name, self.fetch(name)?)))
            .collect()
    }

    /// Writes `refs/<revision>` and removes the `refs/<commit>` hf-hub left (see [`Self::had_commit_ref`]).
    fn record_ref(&self) -> Result<()> {
        self.cache.write_ref(&self.commit)?;
        if self.had_commit_ref || self.cache.revision == self.commit {
            return Ok(());
        }
        let stray = self.cache.repo_dir().join("refs").join(&self.commit);
        match std::fs::remove_file(&stray) {
            // Absent when nothing was downloaded (every file was cached).
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(stray, e)),
            _ => Ok(()),
        }
    }
}
