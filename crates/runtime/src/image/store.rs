//! The content store: blobs addressed by their sha256 digest, the unpacked
//! layers that containers use as overlay lower directories, and the table of
//! image names. Layout under `DATA_DIR/runtime/`:
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs and layers, byte for byte as imported
//! layers/<hex>/          the layer blob <hex> unpacked, whiteouts in overlay form
//! images.json            NAME:TAG -> manifest digest
//! tmp/                   imports in progress (removed by `image gc`)
//! ```
//!
//! Invariants: a file under `blobs/` always holds the content its name says
//! (written to `tmp/`, verified, then renamed into place), and a directory
//! under `layers/` is complete (unpacked in `tmp/`, then renamed). Every blob
//! is hashed again when it is read, so a tampered store is detected.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flate2::read::GzDecoder;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::image::oci::{Descriptor, ImageConfig, Manifest};
use crate::image::reference::ImageRef;
use crate::image::zstd;

/// Errors a caller may want to tell apart; everything else is `anyhow`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image {0} not found")]
    ImageNotFound(String),
    #[error("image {reference} is ambiguous: it matches {n_matches} images")]
    Ambiguous { reference: String, n_matches: usize },
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is missing from the store")]
    BlobMissing { digest: Digest },
}

pub struct Store {
    root: PathBuf,
}

/// An image as the store knows it: its manifest and config, both verified.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub names: Vec<ImageRef>,
}

impl Image {
    /// Bytes the image's blobs take (manifest, config and layers).
    pub fn size_bytes(&self, manifest_len: u64) -> u64 {
        manifest_len
            + self.manifest.config.size
            + self
                .manifest
                .layers
                .iter()
                .map(|layer| layer.size)
                .sum::<u64>()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct ImageTable {
    /// "NAME:TAG" -> manifest digest.
    images: BTreeMap<String, Digest>,
}

/// What `gc` removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub removed_layers: Vec<Digest>,
    pub freed_bytes: u64,
}

impl Store {
    /// Opens (creating when needed) the store under `data_dir/runtime`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        let root = data_dir.join("runtime");
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("layers").join(digest.hex())
    }

    /// shoal's bottom layer for every container: empty `proc`, `dev` and
    /// `sys` directories to mount on (made on first use).
    pub fn mount_point_layer(&self) -> anyhow::Result<PathBuf> {
        let layer = self.root.join("mountpoints");
        for dir in ["proc", "dev", "sys"] {
            let path = layer.join(dir);
            if !path.is_dir() {
                fs::create_dir_all(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
            }
        }
        Ok(layer)
    }

    pub fn layers_root(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// A fresh, unique path under `tmp/` (same filesystem as the store, so a
    /// rename into place is atomic).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{what}-{:016x}", rand::random::<u64>()))
    }

    /// Takes the store's lock: held while the image table or the set of
    /// blobs changes, so concurrent imports, removals and gc do not race.
    pub fn lock(&self) -> anyhow::Result<Flock<File>> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| anyhow::anyhow!("cannot lock {}: {errno}", path.display()))
    }

    /// Held (shared) by imports and by `run` until its container is
    /// recorded, and (exclusive) by `gc` and `image rm`: a sweep never
    /// deletes what an import is writing or a starting container is about
    /// to use.
    pub fn sweep_guard(&self, exclusive: bool) -> anyhow::Result<Flock<File>> {
        let path = self.root.join("sweep.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mode = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, mode)
            .map_err(|(_, errno)| anyhow::anyhow!("cannot lock {}: {errno}", path.display()))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Writes a blob to `tmp/`, checking it against its descriptor's digest
    /// and size while it streams in, and syncs it; [`StagedBlob::commit`]
    /// then renames it into place. Reads at most one byte more than the
    /// descriptor's size, so a source that never ends cannot fill the disk.
    /// A staged blob dropped without being committed is deleted.
    pub fn stage_blob(
        &self,
        source: impl Read,
        descriptor: &Descriptor,
    ) -> anyhow::Result<StagedBlob<'_>> {
        let staged = StagedBlob {
            store: self,
            temp_path: self.temp_path("blob"),
            digest: descriptor.digest.clone(),
            committed: false,
        };
        let file = File::create(&staged.temp_path)
            .with_context(|| format!("cannot create {}", staged.temp_path.display()))?;
        let mut writer = HashingWriter::new(io::BufWriter::new(file));
        io::copy(
            &mut source.take(descriptor.size.saturating_add(1)),
            &mut writer,
        )
        .with_context(|| format!("cannot read blob {}", descriptor.digest))?;
        let (writer, digest, n_bytes) = writer.finish();
        let file = writer.into_inner().map_err(|error| error.into_error())?;
        if digest != descriptor.digest {
            return Err(StoreError::DigestMismatch {
                expected: descriptor.digest.clone(),
                actual: digest,
            }
            .into());
        }
        if n_bytes != descriptor.size {
            bail!(
                "blob {} has {n_bytes} bytes but its descriptor says {}",
                descriptor.digest,
                descriptor.size
            );
        }
        file.sync_all()?;
        Ok(staged)
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobMissing {
                    digest: digest.clone(),
                }
                .into());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        Ok(bytes)
    }

    /// Hashes a blob to check it is intact, without keeping it in memory.
    pub fn verify_blob(&self, digest: &Digest) -> anyhow::Result<()> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobMissing {
                    digest: digest.clone(),
                }
                .into());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let (actual, _) = HashingReader::new(file).finish()?;
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        Ok(())
    }

    /// Unpacks a stored layer blob into `layers/<hex>/` unless already done,
    /// verifying the blob's digest and, when known, its uncompressed diff id.
    pub fn unpack_layer(&self, layer: &Descriptor, diff_id: Option<&Digest>) -> anyhow::Result<()> {
        let final_dir = self.layer_dir(&layer.digest);
        if final_dir.exists() {
            return Ok(());
        }
        let temp_dir = self.temp_path("layer");
        let result = (|| {
            fs::create_dir(&temp_dir)?;
            let file =
                File::open(self.blob_path(&layer.digest)).map_err(|_| StoreError::BlobMissing {
                    digest: layer.digest.clone(),
                })?;
            let mut blob_reader = BufReader::new(HashingReader::new(file));
            // The compression is told by the blob's first bytes, whatever
            // the media type says; the diff id (the digest of the tar) and
            // the blob digest are checked the same way for each.
            let head = blob_reader.fill_buf()?;
            let is_gzip = head.starts_with(&[0x1f, 0x8b]);
            let is_zstd = zstd::is_zstd(head);
            let (blob_digest, diff_digest) = if is_gzip {
                let mut tar_reader = HashingReader::new(GzDecoder::new(blob_reader));
                unpack_tar(&mut tar_reader, &temp_dir)?;
                let (gzip, diff_digest, _) = tar_reader.finish_into_inner()?;
                let (blob_digest, _) = gzip.into_inner().into_inner().finish()?;
                (blob_digest, diff_digest)
            } else if is_zstd {
                // Decoded to the end of the blob: every frame counts.
                let mut tar_reader = HashingReader::new(zstd::ZstdDecoder::new(blob_reader));
                unpack_tar(&mut tar_reader, &temp_dir)?;
                let (zstd, diff_digest, _) = tar_reader.finish_into_inner()?;
                let (blob_digest, _) = zstd.into_inner().into_inner().finish()?;
                (blob_digest, diff_digest)
            } else {
                let mut tar_reader = blob_reader;
                unpack_tar(&mut tar_reader, &temp_dir)?;
                let (digest, _) = tar_reader.into_inner().finish()?;
                (digest.clone(), digest)
            };
            if blob_digest != layer.digest {
                return Err(StoreError::DigestMismatch {
                    expected: layer.digest.clone(),
                    actual: blob_digest,
                }
                .into());
            }
            if let Some(diff_id) = diff_id
                && diff_id != &diff_digest
            {
                bail!(
                    "layer {} unpacks to {diff_digest}, but the image config says {diff_id}",
                    layer.digest
                );
            }
            match fs::rename(&temp_dir, &final_dir) {
                Ok(()) => Ok(()),
                // Another import unpacked the same layer meanwhile.
                Err(_) if final_dir.exists() => {
                    remove_tree(&temp_dir);
                    Ok(())
                }
                Err(error) => Err(error.into()),
            }
        })();
        if result.is_err() {
            remove_tree(&temp_dir);
        }
        result.with_context(|| format!("cannot unpack layer {}", layer.digest))
    }

    fn read_table(&self) -> anyhow::Result<ImageTable> {
        let path = self.root.join("images.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(ImageTable::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write_table(&self, table: &ImageTable) -> anyhow::Result<()> {
        let path = self.root.join("images.json");
        write_atomically(&path, &serde_json::to_vec_pretty(table)?)
    }

    /// Points `reference` at a manifest already in the store. The caller
    /// holds the lock.
    pub fn tag(&self, reference: &ImageRef, manifest_digest: &Digest) -> anyhow::Result<()> {
        let mut table = self.read_table()?;
        table
            .images
            .insert(reference.to_string(), manifest_digest.clone());
        self.write_table(&table)
    }

    /// Every name in the table with the manifest it points at.
    pub fn names(&self) -> anyhow::Result<Vec<(ImageRef, Digest)>> {
        let table = self.read_table()?;
        let mut names = Vec::new();
        for (text, digest) in table.images {
            if let Ok(reference) = ImageRef::parse(&text) {
                names.push((reference, digest));
            }
        }
        Ok(names)
    }

    /// Finds the manifest a user's reference means: `NAME[:TAG]`, a full
    /// `sha256:` digest, or an unambiguous prefix of a digest's hex digits.
    pub fn resolve(&self, text: &str) -> anyhow::Result<Digest> {
        if let Ok(digest) = text.parse::<Digest>() {
            if self.has_blob(&digest) {
                return Ok(digest);
            }
            return Err(StoreError::ImageNotFound(text.to_string()).into());
        }
        let names = self.names()?;
        if let Ok(reference) = ImageRef::parse(text)
            && let Some((_, digest)) = names.iter().find(|(name, _)| name == &reference)
        {
            return Ok(digest.clone());
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() >= 6 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            let matches: BTreeSet<&Digest> = names
                .iter()
                .map(|(_, digest)| digest)
                .filter(|digest| digest.hex().starts_with(hex))
                .collect();
            match matches.len() {
                0 => {}
                1 => return Ok(matches.into_iter().next().expect("one match").clone()),
                n_matches => {
                    return Err(StoreError::Ambiguous {
                        reference: text.to_string(),
                        n_matches,
                    }
                    .into());
                }
            }
        }
        Err(StoreError::ImageNotFound(text.to_string()).into())
    }

    /// Loads an image's manifest and config, verifying both digests.
    pub fn load(&self, manifest_digest: &Digest) -> anyhow::Result<Image> {
        let manifest_bytes = self.read_blob(manifest_digest)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .with_context(|| format!("manifest {manifest_digest} is not a valid image manifest"))?;
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).with_context(|| {
            format!(
                "config {} is not a valid image config",
                manifest.config.digest
            )
        })?;
        let names = self
            .names()?
            .into_iter()
            .filter(|(_, digest)| digest == manifest_digest)
            .map(|(name, _)| name)
            .collect();
        Ok(Image {
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
            names,
        })
    }

    /// Removes a name (or, given a digest, every name of that image), then
    /// deletes what no remaining image or container uses. Returns the names
    /// removed.
    pub fn remove(
        &self,
        text: &str,
        in_use: impl FnOnce() -> anyhow::Result<BTreeSet<Digest>>,
    ) -> anyhow::Result<(Vec<String>, GcReport)> {
        let _sweep_guard = self.sweep_guard(true)?;
        // Read under the guard: no container can be created meanwhile.
        let in_use = in_use()?;
        let _lock = self.lock()?;
        let manifest_digest = self.resolve(text)?;
        let mut table = self.read_table()?;
        let by_name = ImageRef::parse(text)
            .ok()
            .map(|reference| reference.to_string());
        let removed: Vec<String> = match by_name.filter(|name| table.images.contains_key(name)) {
            Some(name) => vec![name],
            None => table
                .images
                .iter()
                .filter(|(_, digest)| **digest == manifest_digest)
                .map(|(name, _)| name.clone())
                .collect(),
        };
        for name in &removed {
            table.images.remove(name);
        }
        self.write_table(&table)?;
        let report = self.sweep(&table, &in_use)?;
        Ok((removed, report))
    }

    /// Deletes blobs, unpacked layers and signatures no image or container
    /// uses, and what interrupted imports left in `tmp/`.
    pub fn gc(
        &self,
        in_use: impl FnOnce() -> anyhow::Result<BTreeSet<Digest>>,
    ) -> anyhow::Result<GcReport> {
        let _sweep_guard = self.sweep_guard(true)?;
        let in_use = in_use()?;
        let _lock = self.lock()?;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp)?.flatten() {
            remove_tree(&entry.path());
        }
        let table = self.read_table()?;
        self.sweep(&table, &in_use)
    }

    /// The caller holds the lock. `in_use` holds the layer digests of
    /// existing containers.
    fn sweep(&self, table: &ImageTable, in_use: &BTreeSet<Digest>) -> anyhow::Result<GcReport> {
        let mut live: BTreeSet<Digest> = in_use.clone();
        for manifest_digest in table.images.values() {
            live.insert(manifest_digest.clone());
            // A manifest that cannot be read keeps nothing else alive; its
            // blobs are still reachable through the manifest digest itself.
            if let Ok(bytes) = fs::read(self.blob_path(manifest_digest))
                && let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes)
            {
                live.insert(manifest.config.digest);
                live.extend(manifest.layers.into_iter().map(|layer| layer.digest));
            }
        }
        let mut report = GcReport::default();
        for entry in fs::read_dir(self.root.join("blobs/sha256"))?.flatten() {
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| Digest::from_hex(name).ok())
            else {
                continue;
            };
            if !live.contains(&digest) {
                report.freed_bytes += entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
                fs::remove_file(entry.path())?;
                report.removed_blobs.push(digest);
            }
        }
        for entry in fs::read_dir(self.root.join("layers"))?.flatten() {
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| Digest::from_hex(name).ok())
            else {
                continue;
            };
            if !live.contains(&digest) {
                // Renaming first makes the removal look atomic to a
                // concurrent `run`, which would otherwise see half a layer.
                let doomed = self.temp_path("doomed-layer");
                fs::rename(entry.path(), &doomed)?;
                report.freed_bytes += tree_size(&doomed);
                remove_tree(&doomed);
                report.removed_layers.push(digest);
            }
        }
        let signatures = self.root.join("signatures");
        if let Ok(entries) = fs::read_dir(&signatures) {
            for entry in entries.flatten() {
                let orphan = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| Digest::from_hex(name).ok())
                    .is_none_or(|digest| !live.contains(&digest));
                if orphan {
                    remove_tree(&entry.path());
                }
            }
        }
        Ok(report)
    }
}

/// A verified blob in `tmp/`, waiting to be renamed into the store.
pub struct StagedBlob<'a> {
    store: &'a Store,
    temp_path: PathBuf,
    digest: Digest,
    committed: bool,
}

impl StagedBlob<'_> {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The staged file, complete and verified.
    pub fn path(&self) -> &Path {
        &self.temp_path
    }

    /// Renames the blob into place (atomically: readers see no blob or the
    /// whole one; the same blob stored meanwhile by another import is
    /// replaced by identical bytes).
    pub fn commit(mut self) -> anyhow::Result<()> {
        let target = self.store.blob_path(&self.digest);
        fs::rename(&self.temp_path, &target)
            .with_context(|| format!("cannot store blob {}", self.digest))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedBlob<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Unpacks one layer tar into `target`, turning OCI whiteouts into overlayfs
/// ones: `.wh.NAME` becomes a 0/0 character device `NAME`, and
/// `.wh..wh..opq` marks its directory opaque with the `trusted.overlay.opaque`
/// extended attribute.
fn unpack_tar(reader: impl Read, target: &Path) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().context("not a tar archive")? {
        let mut entry = entry.context("corrupt tar archive")?;
        let path = entry.path().context("corrupt tar archive")?.into_owned();
        let Some(file_name) = path
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_string)
        else {
            entry.unpack_in(target)?;
            continue;
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        if parent.components().any(|component| {
            !matches!(
                component,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            bail!("layer entry {} escapes the layer", path.display());
        }
        let kind = entry.header().entry_type();
        if file_name == ".wh..wh..opq" {
            let dir = target.join(parent);
            fs::create_dir_all(&dir)?;
            xattr::set(&dir, "trusted.overlay.opaque", b"y")
                .with_context(|| format!("cannot mark {} opaque", dir.display()))?;
        } else if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let dir = target.join(parent);
            fs::create_dir_all(&dir)?;
            let whiteout = dir.join(hidden);
            let _ = fs::remove_file(&whiteout);
            nix::sys::stat::mknod(
                &whiteout,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .with_context(|| format!("cannot create whiteout {}", whiteout.display()))?;
        } else if kind.is_character_special() || kind.is_block_special() {
            // Device nodes in an image would give its containers the host's
            // devices; shoal provides /dev itself.
            continue;
        } else if kind.is_fifo() {
            let fifo = target.join(&path);
            if let Some(dir) = fifo.parent() {
                fs::create_dir_all(dir)?;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(mode))?;
        } else {
            entry
                .unpack_in(target)
                .with_context(|| format!("cannot unpack {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes a file so that readers see the old or the new content, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_replacing(path, bytes, true)
}

/// Like [`write_atomically`] but without waiting for the disk: for the
/// records of containers and network leases, which describe processes and
/// kernel objects that do not outlive a reboot anyway. An `fsync` there cost
/// up to tens of milliseconds per container start on a busy disk.
pub fn write_ephemeral(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    let temp_path = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut file = File::create(&temp_path)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&temp_path, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Removes a directory tree, best effort: used on cleanup paths, where the
/// first error must not hide the one that caused the cleanup.
pub fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

fn tree_size(path: &Path) -> u64 {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return 0;
    };
    if metadata.is_dir() {
        fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| tree_size(&entry.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else if metadata.file_type().is_char_device() {
        0
    } else {
        metadata.size()
    }
}
