//! The plugin's table, read from the library and checked once at load, and the buffers
//! its functions hand back.
//!
//! [`Table::read`] copies what `plugbay_plugin_v1()` returned into a [`Table`]: the entries
//! `include/plugbay.h` requires as plain function pointers (a NULL one refuses the load),
//! the optional `snapshot` and `restore` as `Option`, present only when the plugin's
//! `struct_size` covers them and they are set. Nothing past the plugin's own table is read,
//! and the call path never checks an entry again.

use std::ffi::c_void;
use std::path::Path;

use plugbay_abi::{self as abi, Buf, Output, PluginV1};

use super::shown;
use crate::error::{Code, Error, Result};

/// Longest error message kept from a plugin (longer ones are cut).
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// A plugin's checked table. Its function pointers are code in the plugin's library: a
/// `Table` is only used beside the library it came from, which outlives it.
#[derive(Clone, Copy)]
pub(super) struct Table {
    /// The ABI version the plugin was built against (checked: [`abi::ABI_VERSION`]).
    pub(super) abi_version: u32,
    /// The table's size as the plugin built it.
    pub(super) struct_size: u32,
    /// The `PLUGBAY_FLAG_*` bits.
    pub(super) flags: u32,
    /// Writes the description JSON.
    pub(super) describe: abi::DescribeFn,
    /// Creates an instance.
    pub(super) init: abi::InitFn,
    /// Serves one call.
    pub(super) call: abi::CallFn,
    /// Receives an event.
    pub(super) on_event: abi::OnEventFn,
    /// Releases an instance.
    pub(super) shutdown: abi::ShutdownFn,
    /// Releases a buffer the plugin allocated.
    pub(super) free_buf: abi::FreeBufFn,
    /// Writes the instance's state (optional in the header).
    pub(super) snapshot: Option<abi::SnapshotFn>,
    /// Loads a state into a fresh instance (optional in the header).
    pub(super) restore: Option<abi::RestoreFn>,
}

/// The names of the entries every table must set, in table order.
pub(super) const REQUIRED: [&str; 6] = ["describe", "init", "call", "on_event", "shutdown", "free_buf"];

impl Table {
    /// Reads and checks the table a plugin's entry returned: ABI version first, then the
    /// table's size, then every required function pointer.
    ///
    /// # Errors
    /// `failed_precondition` naming `path` and what is wrong with the table.
    ///
    /// # Safety
    /// `table` must be NULL or point to at least 4 readable bytes; if its version is
    /// [`abi::ABI_VERSION`], to at least as many readable bytes as its size field says.
    pub(super) unsafe fn read(table: *const PluginV1, path: &Path) -> Result<Table> {
        if table.is_null() {
            return Err(Error::precondition(format!("{}: plugbay_plugin_v1() returned NULL", shown(path))));
        }
        // SAFETY: non-NULL, and every ABI version starts with a u32 version field.
        let version = unsafe { table.cast::<u32>().read_unaligned() };
        if version != abi::ABI_VERSION {
            return Err(Error::precondition(format!(
                "{} is built for ABI {version}, this host speaks {}",
                shown(path),
                abi::ABI_VERSION
            )));
        }
        // SAFETY: a version-1 table starts with (version, size); reading the size is in bounds.
        let size = unsafe { table.cast::<u32>().add(1).read_unaligned() } as usize;
        if size < PluginV1::BASE_SIZE {
            return Err(Error::precondition(format!(
                "{}: its ABI 1 table is {size} bytes, smaller than the {} the ABI defines",
                shown(path),
                PluginV1::BASE_SIZE
            )));
        }
        // A copy of the part of the table the plugin has; fields it lacks (a table from
        // before the optional fields were appended) stay NULL.
        let mut raw = PluginV1 {
            abi_version: 0,
            struct_size: 0,
            flags: 0,
            reserved: 0,
            describe: None,
            init: None,
            call: None,
            on_event: None,
            shutdown: None,
            free_buf: None,
            snapshot: None,
            restore: None,
        };
        let covered = if size >= size_of::<PluginV1>() { size_of::<PluginV1>() } else { PluginV1::BASE_SIZE };
        // SAFETY: the plugin's table has at least `size` readable bytes (the caller's
        // contract), at least `covered`; `raw` is a PluginV1, at least `covered` bytes
        // large; the two do not overlap. Every field of a PluginV1 is valid for any bytes a
        // C table may hold in it (integers, and nullable function pointers).
        unsafe {
            std::ptr::copy_nonoverlapping(table.cast::<u8>(), (&raw mut raw).cast::<u8>(), covered);
        }
        Table::checked(&raw, path)
    }

    /// Turns a copied table into a [`Table`], refusing the first required entry that is NULL.
    fn checked(raw: &PluginV1, path: &Path) -> Result<Table> {
        let missing = |name: &str| {
            Error::precondition(format!(
                "{}: the table's `{name}` function pointer is NULL; every entry must be set",
                shown(path)
            ))
        };
        let [describe, init, call, on_event, shutdown, free_buf] = REQUIRED;
        let optional = raw.has_snapshots();
        Ok(Table {
            abi_version: raw.abi_version,
            struct_size: raw.struct_size,
            flags: raw.flags,
            describe: raw.describe.ok_or_else(|| missing(describe))?,
            init: raw.init.ok_or_else(|| missing(init))?,
            call: raw.call.ok_or_else(|| missing(call))?,
            on_event: raw.on_event.ok_or_else(|| missing(on_event))?,
            shutdown: raw.shutdown.ok_or_else(|| missing(shutdown))?,
            free_buf: raw.free_buf.ok_or_else(|| missing(free_buf))?,
            snapshot: raw.snapshot.filter(|_| optional),
            restore: raw.restore.filter(|_| optional),
        })
    }

    /// Whether the plugin declared `PLUGBAY_FLAG_THREAD_SAFE`.
    pub(super) fn thread_safe(&self) -> bool {
        self.flags & abi::FLAG_THREAD_SAFE != 0
    }

    /// Whether the plugin declared `PLUGBAY_FLAG_UNLOADABLE`.
    pub(super) fn unloadable(&self) -> bool {
        self.flags & abi::FLAG_UNLOADABLE != 0
    }

    /// Releases a plugin-allocated buffer through the plugin's own free function.
    pub(super) fn free(&self, instance: *mut c_void, buf: Buf) {
        if buf.is_empty() {
            return;
        }
        // SAFETY: `buf` came from this plugin's output for `instance` and is freed once.
        unsafe { (self.free_buf)(instance, buf) };
    }

    /// Copies out and frees every buffer of `out`, which the plugin wrote for `instance`.
    pub(super) fn take(&self, instance: *mut c_void, out: Output) -> Taken {
        let copy = |buf: Buf, limit: usize| -> Vec<u8> {
            if buf.is_empty() {
                return Vec::new();
            }
            // SAFETY: the plugin wrote `len` bytes at `ptr` and keeps them until free_buf.
            let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len.min(limit)) }.to_vec();
            self.free(instance, buf);
            bytes
        };
        self.free(instance, out.content_type);
        Taken { payload: copy(out.payload, usize::MAX), error: copy(out.error, MAX_ERROR_MESSAGE_BYTES) }
    }
}

/// The buffers of one plugin output, copied out and already freed on the plugin's side.
pub(super) struct Taken {
    /// The payload.
    pub(super) payload: Vec<u8>,
    /// The error message, cut at [`MAX_ERROR_MESSAGE_BYTES`].
    error: Vec<u8>,
}

impl Taken {
    /// The plugin's failure `status` with its message as an [`Error`].
    pub(super) fn into_error(self, status: abi::Status) -> Error {
        let mut message = String::from_utf8_lossy(&self.error).into_owned();
        if message.is_empty() {
            message = "the plugin returned an error without a message".to_owned();
        }
        match Code::from_status(status) {
            Some(code) => Error::new(code, message),
            None => Error::internal(format!("the plugin returned unknown status {status}: {message}")),
        }
    }

    /// `Ok(payload)` for [`abi::STATUS_OK`], the plugin's error otherwise.
    pub(super) fn into_result(self, status: abi::Status) -> Result<Vec<u8>> {
        if status == abi::STATUS_OK { Ok(self.payload) } else { Err(self.into_error(status)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn describe(_: *mut c_void, _: *mut Output) -> abi::Status {
        abi::STATUS_OK
    }
    unsafe extern "C" fn init(
        _: *const abi::HostApiV1,
        _: abi::Str,
        _: *mut *mut c_void,
        _: *mut Output,
    ) -> abi::Status {
        abi::STATUS_OK
    }
    unsafe extern "C" fn call(_: *mut c_void, _: *const abi::CallV1, _: *mut Output) -> abi::Status {
        abi::STATUS_OK
    }
    unsafe extern "C" fn on_event(_: *mut c_void, _: *const abi::EventV1, _: *mut Output) -> abi::Status {
        abi::STATUS_OK
    }
    unsafe extern "C" fn shutdown(_: *mut c_void) {}
    unsafe extern "C" fn free_buf(_: *mut c_void, _: Buf) {}
    unsafe extern "C" fn snapshot(_: *mut c_void, _: *mut Output) -> abi::Status {
        abi::STATUS_OK
    }

    fn whole() -> PluginV1 {
        PluginV1 {
            abi_version: abi::ABI_VERSION,
            struct_size: size_of::<PluginV1>() as u32,
            flags: abi::FLAG_THREAD_SAFE,
            reserved: 0,
            describe: Some(describe),
            init: Some(init),
            call: Some(call),
            on_event: Some(on_event),
            shutdown: Some(shutdown),
            free_buf: Some(free_buf),
            snapshot: Some(snapshot),
            restore: None,
        }
    }

    fn read(table: &PluginV1) -> Result<Table> {
        // SAFETY: a whole PluginV1, at least as large as its size field says.
        unsafe { Table::read(table, Path::new("libx.so")) }
    }

    #[test]
    fn a_whole_table_keeps_its_optional_entries() {
        let table = read(&whole()).unwrap();
        assert!(table.thread_safe() && !table.unloadable());
        assert!(table.snapshot.is_some() && table.restore.is_none());
    }

    #[test]
    fn a_table_whose_size_stops_before_the_optional_entries_has_none() {
        let mut raw = whole();
        raw.struct_size = PluginV1::BASE_SIZE as u32;
        let table = read(&raw).unwrap();
        assert!(table.snapshot.is_none() && table.restore.is_none());
    }

    #[test]
    fn every_required_entry_is_checked_by_name() {
        let clear: [fn(&mut PluginV1); 6] = [
            |t| t.describe = None,
            |t| t.init = None,
            |t| t.call = None,
            |t| t.on_event = None,
            |t| t.shutdown = None,
            |t| t.free_buf = None,
        ];
        for (name, clear) in REQUIRED.iter().zip(clear) {
            let mut raw = whole();
            clear(&mut raw);
            let error = read(&raw).err().expect("a NULL entry is refused");
            assert_eq!(error.code(), Code::FailedPrecondition);
            let text = error.to_string();
            assert!(text.contains(&format!("`{name}` function pointer is NULL")), "{text}");
            assert!(text.contains("libx.so"), "{text}");
        }
    }

    #[test]
    fn null_table_other_versions_and_short_tables_are_refused() {
        // SAFETY: NULL is allowed by the contract.
        let null = unsafe { Table::read(std::ptr::null(), Path::new("libx.so")) };
        assert!(null.err().unwrap().to_string().contains("returned NULL"));
        let mut raw = whole();
        raw.abi_version = 2;
        assert!(read(&raw).err().unwrap().to_string().contains("built for ABI 2, this host speaks 1"));
        let mut raw = whole();
        raw.struct_size = 40;
        assert!(read(&raw).err().unwrap().to_string().contains("table is 40 bytes, smaller than the"));
    }
}
