//! Options may come before the command's name: `callosum-loadgen --target H:P churn -n 100`
//! reads as `callosum-loadgen churn --target H:P -n 100`, so the options the default job
//! takes at the top level work the same in front of a command.
//!
//! Why by rewriting the arguments: clap parses options of a subcommand after its name only,
//! and top-level copies of every option would need merging with their defaults. Moving the
//! command's name to the front, before clap sees the arguments, keeps one definition of every
//! option. Which options take a value is read from clap's own description of the command
//! line, so a value that happens to be a command's name (`--json churn`) is not mistaken for
//! one.

use std::ffi::OsString;

/// `args` (program name first) with the first command name found among them moved to just
/// after the program name. Unchanged when no command name is there or it is already first.
pub fn command_first(cmd: &clap::Command, args: Vec<OsString>) -> Vec<OsString> {
    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    let mut i = 1;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            return args;
        };
        if arg == "--" {
            return args;
        }
        if names.contains(&arg) {
            if i == 1 {
                return args;
            }
            let mut out = args;
            let name = out.remove(i);
            out.insert(1, name);
            return out;
        }
        if !arg.starts_with('-') {
            // A positional argument of the default job: none exists, so nothing to move.
            return args;
        }
        i += if takes_separate_value(cmd, arg) { 2 } else { 1 };
    }
    args
}

/// Whether `arg` (`--name`, `-x`) is an option whose value is the next argument.
fn takes_separate_value(cmd: &clap::Command, arg: &str) -> bool {
    let takes = |a: &clap::Arg| a.get_action().takes_values();
    let search = |pred: &dyn Fn(&clap::Arg) -> bool| {
        // The option may belong to the top level or to any command (it is moved with them).
        std::iter::once(cmd)
            .chain(cmd.get_subcommands())
            .flat_map(|c| c.get_arguments())
            .find(|a| pred(a))
            .is_some_and(takes)
    };
    if let Some(long) = arg.strip_prefix("--") {
        !long.contains('=') && search(&|a| a.get_long() == Some(long))
    } else if let Some(short) = arg.strip_prefix('-') {
        let mut chars = short.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => search(&|a| a.get_short() == Some(c)),
            _ => false, // `-c8`: the value is attached
        }
    } else {
        false
    }
}
