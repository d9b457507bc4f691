//! Watching plugins folders: file events (the `notify` crate, on the folders themselves so
//! editors' rename dances and atomic replaces are seen) become "this plugin folder changed"
//! notices, debounced until the folder has been quiet for a while, so a half-written
//! artifact is not acted on while it is being written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// A running watch; dropping it stops the events.
pub(crate) struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// The plugin folder (a direct sub-folder of one of `roots`) that `path` is in or is;
/// `None` for the roots themselves and for hidden entries (`.name`, e.g. a folder being
/// assembled before it is renamed into place).
pub(crate) fn plugin_folder(roots: &[PathBuf], path: &Path) -> Option<PathBuf> {
    roots.iter().find_map(|root| {
        let first = path.strip_prefix(root).ok()?.components().next()?;
        let name = first.as_os_str().to_str()?;
        (!name.starts_with('.')).then(|| root.join(name))
    })
}

/// Starts watching `roots` (recursively); each event's plugin folder is sent on `changes`.
///
/// # Errors
/// `failed_precondition` naming the folder when it cannot be watched (missing, or out of
/// inotify watches).
pub(crate) fn start(roots: &[PathBuf], changes: mpsc::UnboundedSender<PathBuf>) -> Result<FolderWatch> {
    let watched = roots.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return; // reads (the host's own, too) change nothing
        }
        for path in &event.paths {
            if let Some(folder) = plugin_folder(&watched, path) {
                let _ = changes.send(folder);
            }
        }
    })
    .map_err(|error| Error::precondition(format!("cannot start watching plugin folders: {error}")))?;
    for root in roots {
        watcher.watch(root, RecursiveMode::Recursive).map_err(|error| {
            Error::precondition(format!("cannot watch the plugins folder: {error}")).with_file(root)
        })?;
    }
    Ok(FolderWatch { _watcher: watcher })
}

/// Receives folder notices and calls `act` for each folder once it has been quiet for
/// `quiet` (every new event restarts its wait). Folders are acted on one at a time, in the
/// order they became quiet. Returns when `changes` closes.
pub(crate) async fn debounce<F, Fut>(
    mut changes: mpsc::UnboundedReceiver<PathBuf>,
    quiet: Duration,
    mut act: F,
) where
    F: FnMut(PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next = pending.values().min().copied();
        let change = match next {
            Some(at) => tokio::select! {
                change = changes.recv() => change.map(Some),
                () = tokio::time::sleep_until(at) => Some(None),
            },
            None => changes.recv().await.map(Some),
        };
        match change {
            None => return,
            Some(Some(folder)) => {
                pending.insert(folder, Instant::now() + quiet);
            }
            Some(None) => {
                let now = Instant::now();
                let ready: Vec<PathBuf> =
                    pending.iter().filter(|(_, at)| **at <= now).map(|(folder, _)| folder.clone()).collect();
                for folder in ready {
                    pending.remove(&folder);
                    act(folder).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_their_plugin_folder() {
        let roots = [PathBuf::from("/p"), PathBuf::from("/q/plugins")];
        assert_eq!(plugin_folder(&roots, Path::new("/p/kv/lib.so")), Some(PathBuf::from("/p/kv")));
        assert_eq!(plugin_folder(&roots, Path::new("/p/kv")), Some(PathBuf::from("/p/kv")));
        assert_eq!(plugin_folder(&roots, Path::new("/q/plugins/a/b/c")), Some(PathBuf::from("/q/plugins/a")));
        assert_eq!(plugin_folder(&roots, Path::new("/p")), None);
        assert_eq!(plugin_folder(&roots, Path::new("/p/.kv.xtask-1/lib.so")), None);
        assert_eq!(plugin_folder(&roots, Path::new("/elsewhere/kv")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_folder_is_acted_on_once_after_it_is_quiet() {
        let (send, receive) = mpsc::unbounded_channel();
        let acted = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = acted.clone();
        let task = tokio::spawn(debounce(receive, Duration::from_millis(100), move |folder| {
            let log = log.clone();
            async move { log.lock().push((folder, Instant::now())) }
        }));
        let start = Instant::now();
        for _ in 0..5 {
            send.send(PathBuf::from("/p/a")).unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        send.send(PathBuf::from("/p/b")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(send);
        task.await.unwrap();
        let acted = acted.lock().clone();
        assert_eq!(acted.len(), 2, "{acted:?}");
        // `a` had events every 60 ms until 240 ms: acted on 100 ms after the last one.
        assert_eq!(acted[0].0, PathBuf::from("/p/a"));
        assert_eq!(acted[0].1 - start, Duration::from_millis(340));
        assert_eq!(acted[1].0, PathBuf::from("/p/b"));
    }
}
