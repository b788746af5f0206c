// Give every binary and test an rpath to the libtorch that torch-sys linked,
// so nothing needs LD_LIBRARY_PATH (see shared/SETUP-NOTES.md).
//
// With the `cuda` feature, `--no-as-needed -ltorch_cuda` keeps libtorch_cuda.so
// linked; without it the linker drops the library (nothing references it
// directly) and tch reports no CUDA device. It is a feature, not automatic,
// because the PyPI wheel always ships libtorch_cuda.so, whose CUDA libraries
// (~2 GB of nvidia-* wheels) a CPU user does not install.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
