//! Raw events as JSON lines in a file that rotates by size: `events.jsonl`
//! is written, and when it passes the limit it becomes `events.jsonl.1`,
//! the older ones move up, and the oldest past `keep` is removed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::event::Event;
use crate::pipeline::EventsFileSettings;

pub(crate) struct EventsFile {
    settings: EventsFileSettings,
    out: BufWriter<File>,
    size: u64,
    failing: bool,
}

impl std::fmt::Debug for EventsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsFile")
            .field("path", &self.settings.path)
            .field("size", &self.size)
            .finish()
    }
}

fn open(path: &PathBuf) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

impl EventsFile {
    pub(crate) fn open(settings: EventsFileSettings) -> std::io::Result<EventsFile> {
        let (f, size) = open(&settings.path)?;
        Ok(EventsFile {
            settings,
            out: BufWriter::with_capacity(64 * 1024, f),
            size,
            failing: false,
        })
    }

    pub(crate) fn write(&mut self, ev: &Event) {
        let mut line = match serde_json::to_vec(&ev.record()) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let res = self.out.write_all(&line);
        self.note(res);
        self.size += line.len() as u64;
        if self.size >= self.settings.max_bytes.max(1) {
            let res = self.rotate();
            self.note(res);
        }
    }

    pub(crate) fn flush(&mut self) {
        let res = self.out.flush();
        self.note(res);
    }

    /// Logs the first failure of a run of failures, and the recovery.
    fn note(&mut self, res: std::io::Result<()>) {
        match res {
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(file = %self.settings.path.display(), error = %e, "cannot write analytics events");
            }
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(file = %self.settings.path.display(), "analytics events are written again");
            }
            _ => {}
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.settings.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let keep = self.settings.keep;
        if keep == 0 {
            std::fs::remove_file(&self.settings.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(keep));
            for n in (1..keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.settings.path, self.rotated(1))?;
        }
        let (f, size) = open(&self.settings.path)?;
        self.out = BufWriter::with_capacity(64 * 1024, f);
        self.size = size;
        Ok(())
    }
}
