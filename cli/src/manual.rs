//! `--completions SHELL` and `--man`: every tool prints its own shell
//! completions and man page, generated from its clap definition so they
//! cannot drift from `--help`.
//!
//! A tool flattens [`ManualArgs`] into its parser and calls [`parse`]
//! instead of `Parser::parse`. Both options are exclusive: they need none of
//! the tool's otherwise required arguments (`hvm-restore-check
//! --completions bash` works without an image).

use clap::{ArgMatches, Command, Parser};
pub use clap_complete::Shell;

/// The two options every tool has; flatten them into its parser with
/// `#[command(flatten)]`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ManualArgs {
    /// Print the completion script for SHELL (bash, elvish, fish,
    /// powershell, zsh) on standard output and exit.
    #[arg(long, value_name = "SHELL", value_enum, exclusive = true)]
    pub completions: Option<Shell>,
    /// Print the man page (roff) on standard output and exit, e.g.
    /// `--man > hvm-inspect.1` or `--man | man -l -`.
    #[arg(long, exclusive = true)]
    pub man: bool,
}

/// The completion script of `cmd` for `shell`, for the binary named as the
/// command is.
pub fn completions(mut cmd: Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    // Into memory: clap_complete panics on a write error, standard output
    // must report it instead.
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// The man page of `cmd` in roff: the usual sections, with every
/// subcommand (nested ones too, as `hvm-inspect show page`) and a section
/// of options per subcommand (`hvm-inspect convert`'s `--to` …), which
/// clap_mangen's single page would leave out or point to pages that do not
/// exist.
pub fn man_page(cmd: Command) -> Vec<u8> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let title = cmd.get_name().to_uppercase();
    let man = clap_mangen::Man::new(cmd.clone()).title(title);
    let mut out = Vec::new();
    // Writes into a Vec cannot fail.
    let _ = render(&man, &cmd, &mut out);
    // Each piece starts with roff's apostrophe preamble: keep one, after
    // the title, so the page opens with `.TH`.
    let text = String::from_utf8_lossy(&out).replace(PREAMBLE, "");
    let (th, rest) = text.split_once('\n').unwrap_or((&text, ""));
    format!("{th}\n{PREAMBLE}{rest}").into_bytes()
}

/// What `roff` writes before every document it renders.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn render(man: &clap_mangen::Man, cmd: &Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.has_subcommands() {
        let mut list = roff::Roff::new();
        list.control("SH", ["SUBCOMMANDS"]);
        subcommand_list(cmd, cmd.get_name(), &mut list);
        list.to_writer(out)?;
        subcommand_options(cmd, cmd.get_name(), out)?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Every subcommand, depth first, by its full name and what it does.
fn subcommand_list(cmd: &Command, path: &str, roff: &mut roff::Roff) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let path = format!("{path} {}", sub.get_name());
        roff.control("TP", []);
        roff.text([roff::bold(path.as_str())]);
        if let Some(about) = sub.get_about().or_else(|| sub.get_long_about()) {
            for line in about.to_string().lines() {
                roff.text([roff::roman(line)]);
            }
        }
        subcommand_list(sub, &path, roff);
    }
}

/// A section per subcommand (depth first) holding its own arguments: the
/// global ones and `--help` are already on the page.
fn subcommand_options(cmd: &Command, path: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let path = format!("{path} {}", sub.get_name());
        let heading = format!("{path} options");
        let own = sub
            .clone()
            .mut_args(|a| {
                if a.is_global_set() || a.get_id() == "help" {
                    a.hide(true)
                } else {
                    a.help_heading(heading.clone())
                }
            })
            .mut_subcommands(|s| s.hide(true));
        if own.get_arguments().any(|a| !a.is_hide_set()) {
            clap_mangen::Man::new(own).render_options_section(out)?;
        }
        subcommand_options(sub, &path, out)?;
    }
    Ok(())
}

/// What `--completions` / `--man` in `matches` ask `cmd` to print, if
/// either was given.
pub fn requested(cmd: &Command, matches: &ArgMatches) -> Option<Vec<u8>> {
    if let Ok(Some(shell)) = matches.try_get_one::<Shell>("completions") {
        return Some(completions(cmd.clone(), *shell));
    }
    if let Ok(Some(true)) = matches.try_get_one::<bool>("man") {
        return Some(man_page(cmd.clone()));
    }
    None
}

/// `P::parse()`, answering `--completions` and `--man` first: prints what
/// they ask for on standard output and exits 0 (a closed pipe ends the run
/// by SIGPIPE, another write error exits 2). Usage errors exit 2 and
/// `--help`/`--version` exit 0, as with `P::parse()`.
pub fn parse<P: Parser>() -> P {
    let cmd = P::command();
    let mut matches = cmd.clone().get_matches();
    if let Some(bytes) = requested(&cmd, &matches) {
        let code = match crate::stdout::write(&bytes) {
            Ok(()) => 0,
            Err(f) => crate::stdout::fail(cmd.get_name(), &f),
        };
        std::process::exit(code.into());
    }
    match P::from_arg_matches_mut(&mut matches) {
        Ok(p) => p,
        Err(e) => e.format(&mut P::command()).exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Subcommand};

    /// A tool shaped like hvm-inspect: a required-ish positional, a global
    /// flag, subcommands with their own options, one nested.
    #[derive(Parser, Debug)]
    #[command(name = "toy-tool", version)]
    struct Toy {
        #[command(subcommand)]
        cmd: Option<Cmd>,
        /// The image.
        image: std::path::PathBuf,
        /// Global switch.
        #[arg(long, global = true)]
        loud: bool,
        #[command(flatten)]
        manual: ManualArgs,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        /// Check it.
        Check {
            /// Be strict.
            #[arg(long)]
            strictly: bool,
        },
        /// Show a part.
        Show {
            #[command(subcommand)]
            what: What,
        },
    }

    #[derive(Subcommand, Debug)]
    enum What {
        /// One page.
        Page(PageArgs),
    }

    #[derive(Args, Debug)]
    struct PageArgs {
        /// Which pfn.
        #[arg(long)]
        pfn_number: u64,
    }

    fn asked(args: &[&str]) -> Option<Vec<u8>> {
        let cmd = <Toy as clap::CommandFactory>::command();
        let m = cmd.clone().try_get_matches_from(args).expect("parses");
        requested(&cmd, &m)
    }

    #[test]
    fn completions_need_no_required_argument_and_list_everything() {
        let bash =
            String::from_utf8(asked(&["toy-tool", "--completions", "bash"]).unwrap()).unwrap();
        for word in [
            "check",
            "show",
            "page",
            "--strictly",
            "--pfn-number",
            "--loud",
            "--man",
        ] {
            assert!(bash.contains(word), "{word} missing from\n{bash}");
        }
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let s = asked(&["toy-tool", "--completions", shell]).unwrap();
            assert!(
                String::from_utf8(s).unwrap().contains("toy-tool"),
                "{shell}"
            );
        }
    }

    #[test]
    fn man_page_is_roff_with_every_option_of_every_subcommand() {
        let man = String::from_utf8(asked(&["toy-tool", "--man"]).unwrap()).unwrap();
        assert!(man.starts_with(".TH TOY-TOOL 1 "), "{man}");
        assert_eq!(man.matches(".ds Aq").count(), 2, "one preamble\n{man}");
        // roff escapes the dashes of options.
        for opt in ["loud", "completions", "strictly", "pfn\\-number", "version"] {
            assert!(
                man.contains(&format!("\\-\\-{opt}")),
                "--{opt} missing from\n{man}"
            );
        }
        assert!(man.contains(".SH \"TOY-TOOL SHOW PAGE OPTIONS\""), "{man}");
        // Every subcommand by its full name, no pointer to a missing page.
        for sub in [
            "toy\\-tool check",
            "toy\\-tool show",
            "toy\\-tool show page",
        ] {
            assert!(
                man.contains(&format!("\\fB{sub}\\fR")),
                "{sub} missing from\n{man}"
            );
        }
        assert!(!man.contains("(1)"), "{man}");
        // The global flag is listed once, not again under each subcommand.
        assert_eq!(man.matches(".TP\n\\fB\\-\\-loud\\fR\n").count(), 1, "{man}");
    }

    #[test]
    fn exclusive_options_refuse_company_and_are_absent_otherwise() {
        let cmd = <Toy as clap::CommandFactory>::command();
        assert!(cmd
            .clone()
            .try_get_matches_from(["toy-tool", "--man", "img"])
            .is_err());
        assert!(cmd
            .clone()
            .try_get_matches_from(["toy-tool", "--man", "--completions", "zsh"])
            .is_err());
        assert!(
            cmd.clone().try_get_matches_from(["toy-tool"]).is_err(),
            "the image is still required"
        );
        assert_eq!(asked(&["toy-tool", "img", "check"]), None);
    }
}
