//! NVSwitch evidence through NVIDIA's NSCQ library (`libnvidia-nscq.so.2`,
//! API 2.x), loaded at run time: NVSwitches answer there, not through NVML.
//! No Rust binding exists, so this is a thin FFI over the attestation part of
//! NVIDIA's header (`nscq_attestation.h`, in NVIDIA/nvtrust's switch
//! verifier, and used the same way by NVIDIA's C++ SDK and Python binding):
//!
//! - `nscq_session_create(MOUNT_DEVICES)` returns `{rc, session}` by value;
//! - observing `/drv/nvswitch/{device}/uuid` calls back once per switch with
//!   its UUID, which `nscq_uuid_to_label` turns into the label that names
//!   the switch in the other paths;
//! - `/{label}/config/pcie_mode` must say 3 (trusted NVLink on and locked),
//!   as NVIDIA's protected-PCIe verifiers require before attesting;
//! - `nscq_session_set_input(session, 0, nonce, 32)`, then observing
//!   `/{label}/config/attestation_report` calls back with the SPDM request ‖
//!   response for that nonce, and `/{label}/config/certificate` with the
//!   PEM chain, leaf first. Both structs arrive **by value**.
//!
//! Return codes: 0 success, positive a warning (a TDX guest reports 1,
//! "RDT init failure", and works: NVIDIA/nvtrust issue 153), negative an error.

use std::ffi::{c_char, c_void, CStr, CString};
use std::mem::ManuallyDrop;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

/// The library NVIDIA's packages install (`libnvidia-nscq-<branch>`).
pub const LIBRARY: &str = "libnvidia-nscq.so.2";
const API_MAJOR: u32 = 2;
const MOUNT_DEVICES: u32 = 1;
const NONCE_LEN: u32 = 32;
const REPORT_MAX: usize = 0x2000;
const CERT_MAX: usize = 0x1400;
/// An HGX board has 4; more than this is not a real node.
const MAX_SWITCHES: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct Uuid {
    bytes: [u8; 16],
}

#[repr(C)]
struct Label {
    data: [c_char; 64],
}

#[repr(C)]
struct SessionResult {
    rc: i8,
    session: *mut c_void,
}

#[repr(C)]
struct Report {
    size: u32,
    bytes: [u8; REPORT_MAX],
}

#[repr(C)]
struct Certificate {
    chain: [u8; CERT_MAX],
    size: u32,
}

/// NSCQ takes every callback as `void (*)(void)` and calls it with the
/// path's own signature.
type AnyCallback = unsafe extern "C" fn();
type UuidCallback = unsafe extern "C" fn(*const Uuid, i8, *const Uuid, *mut c_void);
type ReportCallback = unsafe extern "C" fn(*const Uuid, i8, Report, *mut c_void);
type CertCallback = unsafe extern "C" fn(*const Uuid, i8, Certificate, *mut c_void);
type ModeCallback = unsafe extern "C" fn(*const Uuid, i8, i8, *mut c_void);

type SessionCreate = unsafe extern "C" fn(u32) -> SessionResult;
type SessionDestroy = unsafe extern "C" fn(*mut c_void);
type PathObserve =
    unsafe extern "C" fn(*mut c_void, *const c_char, AnyCallback, *mut c_void, u32) -> i8;
type SetInput = unsafe extern "C" fn(*mut c_void, u32, *mut c_void, u32) -> i8;
type UuidToLabel = unsafe extern "C" fn(*const Uuid, *mut Label, u32) -> i8;

/// Why switch evidence could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NscqError {
    #[error("switch attestation unavailable: NVIDIA's NSCQ library ({library}) cannot be loaded ({reason}); install libnvidia-nscq for the driver's branch (NVIDIA's CUDA repository, e.g. libnvidia-nscq-570 for driver 570) in the CVM")]
    Missing { library: String, reason: String },
    #[error("switch attestation unavailable: {library} has NSCQ API {found}, this agent speaks {API_MAJOR}.x")]
    Version { library: String, found: String },
    #[error("NSCQ {call} failed: {} ({rc})", rc_name(*.rc))]
    Call { call: String, rc: i8 },
    #[error("NSCQ: {0}")]
    Data(String),
    #[error("NSCQ is busy with another NVSwitch request; try again")]
    Busy,
}

/// NVIDIA's names for NSCQ return codes.
pub fn rc_name(rc: i8) -> &'static str {
    match rc {
        0 => "success",
        1 => "warning: RDT init failure",
        -1 => "not implemented",
        -2 => "invalid UUID",
        -3 => {
            "resource not mountable (is the NVSwitch driver loaded and the switch passed through?)"
        }
        -4 => "overflow",
        -5 => "unexpected value",
        -6 => "unsupported driver",
        -7 => "driver error",
        -8 => "timeout",
        -127 => "external error",
        -128 => "unspecified error",
        r if r > 0 => "warning",
        _ => "error",
    }
}

/// `nscq_tnvl_status_t` LOCKED: bits 0 (TNVL) and 1 (lock) both set, as
/// nvtrust's and go-nvattest-tools' pre-checks test them.
const TNVL_LOCKED: i8 = 3;

fn mode_name(mode: i8) -> &'static str {
    match mode {
        -1 => "unknown",
        0 => "disabled",
        1 => "enabled, not locked",
        2 => "failure",
        3 => "locked",
        _ => "undefined",
    }
}

/// One NVSwitch's evidence as the library gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchEvidence {
    pub label: String,
    /// SPDM GET_MEASUREMENTS request ‖ response.
    pub report: Vec<u8>,
    /// PEM, leaf first.
    pub cert_chain: Vec<u8>,
}

/// The loaded library. Calls are serialized: NVIDIA does not say the
/// library is thread-safe, and a node has only a few switches.
pub struct Nscq {
    session_create: SessionCreate,
    session_destroy: SessionDestroy,
    path_observe: PathObserve,
    set_input: SetInput,
    uuid_to_label: UuidToLabel,
    version: u32,
    lock: Mutex<()>,
    /// When the call inside the library went in.
    entered: Mutex<Option<Instant>>,
    wait: Duration,
    // Never closed: the function pointers above live as long as it, and
    // unloading a driver library that started threads can crash the process.
    _lib: ManuallyDrop<libloading::Library>,
}

fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v >> 24, (v >> 12) & 0xfff, v & 0xfff)
}

impl Nscq {
    /// NVIDIA's library from the system's library path.
    pub fn load() -> Result<Self, NscqError> {
        Self::load_from(LIBRARY)
    }

    /// The library at `path` (a file, or a name the loader searches for).
    pub fn load_from(path: &str) -> Result<Self, NscqError> {
        let missing = |reason: String| NscqError::Missing {
            library: path.to_string(),
            reason,
        };
        // SAFETY: loading runs the library's initialisers; this is NVIDIA's
        // library (or the test model), as with NVML.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| missing(e.to_string()))?;
        // SAFETY: each symbol is read with the type NVIDIA's header gives it.
        unsafe {
            let sym = |name: &str| missing(format!("it has no {name}"));
            let version = *lib
                .get::<*const u32>(b"nscq_api_version\0")
                .map_err(|_| sym("nscq_api_version"))?;
            if version.is_null() {
                return Err(sym("nscq_api_version"));
            }
            let version = *version;
            if version >> 24 != API_MAJOR {
                return Err(NscqError::Version {
                    library: path.to_string(),
                    found: version_text(version),
                });
            }
            Ok(Nscq {
                session_create: *lib
                    .get::<SessionCreate>(b"nscq_session_create\0")
                    .map_err(|_| sym("nscq_session_create"))?,
                session_destroy: *lib
                    .get::<SessionDestroy>(b"nscq_session_destroy\0")
                    .map_err(|_| sym("nscq_session_destroy"))?,
                path_observe: *lib
                    .get::<PathObserve>(b"nscq_session_path_observe\0")
                    .map_err(|_| sym("nscq_session_path_observe"))?,
                set_input: *lib
                    .get::<SetInput>(b"nscq_session_set_input\0")
                    .map_err(|_| sym("nscq_session_set_input"))?,
                uuid_to_label: *lib
                    .get::<UuidToLabel>(b"nscq_uuid_to_label\0")
                    .map_err(|_| sym("nscq_uuid_to_label"))?,
                version,
                lock: Mutex::new(()),
                entered: Mutex::new(None),
                wait: WAIT,
                _lib: ManuallyDrop::new(lib),
            })
        }
    }

    /// One call in the library at a time. A request waits up to `wait` for
    /// the one before it (validators' requests overlap at an epoch's start),
    /// then is busy (answered 503, which validators try again); once a call
    /// has been inside for `HUNG`, the library hangs and later requests fail
    /// at once.
    fn enter(&self) -> Result<InLibrary<'_>, NscqError> {
        let start = Instant::now();
        let guard = loop {
            match self.lock.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    let since = *self.entered.lock().unwrap_or_else(|p| p.into_inner());
                    if since.is_some_and(|t| t.elapsed() > HUNG) {
                        return Err(NscqError::Data(format!(
                            "an NVSwitch request has been inside NSCQ for over {} s: the library hangs; restart the agent",
                            HUNG.as_secs()
                        )));
                    }
                    if start.elapsed() > self.wait {
                        return Err(NscqError::Busy);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        *self.entered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(InLibrary {
            _guard: guard,
            entered: &self.entered,
        })
    }

    /// Wait at most this long for another request's call (default 20 s).
    pub fn waiting_at_most(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The library's API version ("2.0.0").
    pub fn version(&self) -> String {
        version_text(self.version)
    }

    /// Every NVSwitch's attestation report for `nonce`, with its chain.
    pub fn switch_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<SwitchEvidence>, NscqError> {
        let _one = self.enter()?;
        let session = Session::open(self)?;
        let mut out = Vec::new();
        for uuid in session.switches()? {
            let label = session.label(&uuid)?;
            // NVIDIA's PPCIe verifiers refuse a switch whose trusted-NVLink
            // mode is not on and locked (the CVM's own driver says so; the
            // signed report does not).
            let mode = session.pcie_mode(&label)?;
            if mode != TNVL_LOCKED {
                return Err(NscqError::Data(format!(
                    "switch {label} is not in locked trusted-NVLink mode (pcie_mode {mode}, {}; NVIDIA's protected-PCIe verifier requires 3, locked): finish NVIDIA's protected-PCIe setup (the fabric manager locks the switches)",
                    mode_name(mode)
                )));
            }
            let report = session.report(&label, nonce)?;
            if report.get(4..36) != Some(&nonce[..]) {
                return Err(NscqError::Data(format!(
                    "switch {label}: the report answers another nonce"
                )));
            }
            let cert_chain = session.certificate(&label)?;
            out.push(SwitchEvidence {
                label,
                report,
                cert_chain,
            });
        }
        Ok(out)
    }
}

/// Longest wait for the call before; the time after which a call hangs.
const WAIT: Duration = Duration::from_secs(20);
const HUNG: Duration = Duration::from_secs(120);

/// The one call inside the library.
struct InLibrary<'a> {
    _guard: std::sync::MutexGuard<'a, ()>,
    entered: &'a Mutex<Option<Instant>>,
}

impl Drop for InLibrary<'_> {
    fn drop(&mut self) {
        *self.entered.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// An open session, destroyed when dropped.
struct Session<'a> {
    api: &'a Nscq,
    raw: *mut c_void,
}

fn check(call: &str, rc: i8) -> Result<(), NscqError> {
    if rc < 0 {
        return Err(NscqError::Call {
            call: call.to_string(),
            rc,
        });
    }
    if rc > 0 {
        tracing::warn!(call, rc, "NSCQ: {}", rc_name(rc));
    }
    Ok(())
}

/// What one observation's callbacks delivered.
#[derive(Default)]
struct Seen<T> {
    values: Vec<Result<T, i8>>,
}

/// A report's or chain's bytes, bounded by its declared size.
fn bounded(bytes: &[u8], size: u32) -> Result<Vec<u8>, i8> {
    // -4 (overflow): the library said it is longer than its own buffer.
    bytes.get(..size as usize).map(<[u8]>::to_vec).ok_or(-4)
}

/// Where a callback's answer goes: the `Seen<T>` that `observe::<T>` passed
/// as user data (each callback below is used with its own `T` only).
///
/// # Safety
/// `user` is null or points to a live `Seen<T>` no one else uses meanwhile.
unsafe fn deliver<T>(user: *mut c_void, rc: i8, value: impl FnOnce() -> Result<T, i8>) {
    // SAFETY: the caller's contract.
    let Some(seen) = (unsafe { (user as *mut Seen<T>).as_mut() }) else {
        return;
    };
    if rc > 0 {
        tracing::warn!(rc, "NSCQ: {}", rc_name(rc));
    }
    seen.values.push(if rc < 0 { Err(rc) } else { value() });
}

/// NSCQ's "unexpected value": what a null UUID with success is taken as.
const UNEXPECTED: i8 = -5;

unsafe extern "C" fn on_uuid(_: *const Uuid, rc: i8, uuid: *const Uuid, user: *mut c_void) {
    // SAFETY: `user` is the `Seen<Uuid>` of `switches`; a non-null `uuid`
    // points to a UUID for the duration of the call.
    unsafe { deliver::<Uuid>(user, rc, || uuid.as_ref().copied().ok_or(UNEXPECTED)) }
}

unsafe extern "C" fn on_mode(_: *const Uuid, rc: i8, mode: i8, user: *mut c_void) {
    // SAFETY: `user` is the `Seen<i8>` of `pcie_mode`.
    unsafe { deliver::<i8>(user, rc, || Ok(mode)) }
}

unsafe extern "C" fn on_report(_: *const Uuid, rc: i8, r: Report, user: *mut c_void) {
    // SAFETY: `user` is the `Seen<Vec<u8>>` of `report`.
    unsafe { deliver::<Vec<u8>>(user, rc, || bounded(&r.bytes, r.size)) }
}

unsafe extern "C" fn on_certificate(_: *const Uuid, rc: i8, c: Certificate, user: *mut c_void) {
    // SAFETY: `user` is the `Seen<Vec<u8>>` of `certificate`.
    unsafe { deliver::<Vec<u8>>(user, rc, || bounded(&c.chain, c.size)) }
}

impl<'a> Session<'a> {
    fn open(api: &'a Nscq) -> Result<Self, NscqError> {
        // SAFETY: the prototype of NVIDIA's header; a struct returned by value.
        let r = unsafe { (api.session_create)(MOUNT_DEVICES) };
        check("session_create", r.rc)?;
        if r.session.is_null() {
            return Err(NscqError::Data("session_create gave no session".into()));
        }
        Ok(Session {
            api,
            raw: r.session,
        })
    }

    /// Observe `path`, collecting what its callbacks deliver. NSCQ calls
    /// them before `path_observe` returns (as every NVIDIA binding assumes).
    fn observe<T>(
        &self,
        path: &str,
        callback: AnyCallback,
    ) -> Result<Vec<Result<T, i8>>, NscqError> {
        let c_path =
            CString::new(path).map_err(|_| NscqError::Data(format!("path {path:?} has a NUL")))?;
        let mut seen = Seen::<T> { values: Vec::new() };
        // SAFETY: the session is open; `seen` outlives the call, and the
        // callback casts `user` back to exactly this type.
        let rc = unsafe {
            (self.api.path_observe)(
                self.raw,
                c_path.as_ptr(),
                callback,
                &mut seen as *mut Seen<T> as *mut c_void,
                0,
            )
        };
        check(&format!("observe {path}"), rc)?;
        Ok(seen.values)
    }

    fn switches(&self) -> Result<Vec<Uuid>, NscqError> {
        // SAFETY: on_uuid has the signature NSCQ calls this path's callback with.
        let cb = unsafe { std::mem::transmute::<UuidCallback, AnyCallback>(on_uuid) };
        let found = self.observe::<Uuid>("/drv/nvswitch/{device}/uuid", cb)?;
        if found.len() > MAX_SWITCHES {
            return Err(NscqError::Data(format!(
                "{} NVSwitches listed (at most {MAX_SWITCHES})",
                found.len()
            )));
        }
        found
            .into_iter()
            .map(|v| {
                v.map_err(|rc| NscqError::Call {
                    call: "reading an NVSwitch UUID".into(),
                    rc,
                })
            })
            .collect()
    }

    fn label(&self, uuid: &Uuid) -> Result<String, NscqError> {
        let mut label = Label { data: [0; 64] };
        // SAFETY: both pointers are valid for the call.
        check("uuid_to_label", unsafe {
            (self.api.uuid_to_label)(uuid, &mut label, 0)
        })?;
        // The header's label is NUL-terminated within its 64 bytes.
        let bytes: Vec<u8> = label.data.iter().map(|c| *c as u8).collect();
        let text = CStr::from_bytes_until_nul(&bytes)
            .map_err(|_| NscqError::Data("a switch label is not NUL-terminated".into()))?
            .to_str()
            .map_err(|_| NscqError::Data("a switch label is not UTF-8".into()))?;
        if text.is_empty() || text.contains('/') {
            return Err(NscqError::Data(format!("unusable switch label {text:?}")));
        }
        Ok(text.to_string())
    }

    /// Exactly one answer for one switch.
    fn one(
        &self,
        label: &str,
        what: &str,
        path: &str,
        cb: AnyCallback,
    ) -> Result<Vec<u8>, NscqError> {
        let mut got = self.observe::<Vec<u8>>(path, cb)?;
        match (got.pop(), got.is_empty()) {
            (Some(Ok(v)), true) if !v.is_empty() => Ok(v),
            (Some(Ok(_)), true) => Err(NscqError::Data(format!("switch {label}: an empty {what}"))),
            (Some(Err(rc)), true) => Err(NscqError::Call {
                call: format!("reading switch {label}'s {what}"),
                rc,
            }),
            (None, _) => Err(NscqError::Data(format!(
                "switch {label}: no {what} came back"
            ))),
            (Some(_), false) => Err(NscqError::Data(format!(
                "switch {label}: more than one {what} came back"
            ))),
        }
    }

    fn pcie_mode(&self, label: &str) -> Result<i8, NscqError> {
        // SAFETY: on_mode has this path's callback signature.
        let cb = unsafe { std::mem::transmute::<ModeCallback, AnyCallback>(on_mode) };
        let mut got = self.observe::<i8>(&format!("/{label}/config/pcie_mode"), cb)?;
        match (got.pop(), got.is_empty()) {
            (Some(Ok(m)), true) => Ok(m),
            (Some(Err(rc)), true) => Err(NscqError::Call {
                call: format!("reading switch {label}'s PCIe mode"),
                rc,
            }),
            _ => Err(NscqError::Data(format!(
                "switch {label}: not one PCIe mode came back"
            ))),
        }
    }

    fn report(&self, label: &str, nonce: &[u8; 32]) -> Result<Vec<u8>, NscqError> {
        let mut input = *nonce;
        // SAFETY: 32 bytes, valid for the call; NSCQ copies its input.
        check("set_input (the nonce)", unsafe {
            (self.api.set_input)(self.raw, 0, input.as_mut_ptr() as *mut c_void, NONCE_LEN)
        })?;
        // SAFETY: on_report has this path's callback signature.
        let cb = unsafe { std::mem::transmute::<ReportCallback, AnyCallback>(on_report) };
        self.one(
            label,
            "attestation report",
            &format!("/{label}/config/attestation_report"),
            cb,
        )
    }

    fn certificate(&self, label: &str) -> Result<Vec<u8>, NscqError> {
        // SAFETY: on_certificate has this path's callback signature.
        let cb = unsafe { std::mem::transmute::<CertCallback, AnyCallback>(on_certificate) };
        self.one(
            label,
            "certificate chain",
            &format!("/{label}/config/certificate"),
            cb,
        )
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by session_create, destroyed once.
        unsafe { (self.api.session_destroy)(self.raw) }
    }
}

/// Where a node's NVSwitch evidence comes from: NSCQ, or a model of it.
pub trait SwitchSource: Send + Sync {
    fn switch_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<SwitchEvidence>, NscqError>;
}

impl SwitchSource for Nscq {
    fn switch_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<SwitchEvidence>, NscqError> {
        Nscq::switch_evidence(self, nonce)
    }
}
