//! The `video-scheduler` binary: parse the command line and run it.

fn main() -> std::process::ExitCode {
    video_scheduler::cli::main()
}
