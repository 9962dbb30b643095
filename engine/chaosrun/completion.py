"""Shell completion from the command line's own parser: ``chaosrun completion bash|zsh|fish``.

The script a shell loads is small and fixed: on TAB it runs ``chaosrun completion --cword N
-- WORDS...``, which walks the same argparse parser the command runs with and prints one
candidate per line (``word<TAB>description``), or ``__files__`` where a path is wanted.
A new option or command is therefore completed the moment it exists; nothing is generated.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

__all__ = ["FILES", "SHELLS", "candidates", "script"]

#: The line that asks the shell for its own file-name completion.
FILES = "__files__"
SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# chaosrun completion for bash: source <(chaosrun completion bash)
_chaosrun_complete() {
    local line files=0
    COMPREPLY=()
    while IFS= read -r line; do
        if [[ $line == __files__ ]]; then
            files=1
        else
            COMPREPLY+=("${line%%$'\t'*}")
        fi
    done < <("${COMP_WORDS[0]}" completion --cword "$COMP_CWORD" -- "${COMP_WORDS[@]}" 2>/dev/null)
    if (( files )); then
        compopt -o default 2>/dev/null
    fi
}
complete -F _chaosrun_complete chaosrun
"""

_ZSH = r"""#compdef chaosrun
# chaosrun completion for zsh: source <(chaosrun completion zsh), after compinit
_chaosrun() {
    local line files=0
    local -a found
    for line in ${(f)"$(${words[1]} completion --cword $((CURRENT - 1)) -- ${words[@]} 2>/dev/null)"}; do
        if [[ $line == __files__ ]]; then
            files=1
        else
            found+=("${${line%%$'\t'*}//:/\\:}:${line#*$'\t'}")
        fi
    done
    (( ${#found} )) && _describe -t chaosrun chaosrun found
    (( files )) && _files
    return 0
}
compdef _chaosrun chaosrun
"""

_FISH = r"""# chaosrun completion for fish: chaosrun completion fish | source
function __chaosrun_complete
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    for line in ($words[1] completion --cword (count $words) -- $words $current 2>/dev/null)
        if test "$line" = __files__
            __fish_complete_path $current
        else
            echo $line
        end
    end
end
complete -c chaosrun -f -a '(__chaosrun_complete)'
"""


def script(shell: str) -> str:
    """The script that hooks ``shell``'s completion to ``chaosrun completion --cword``."""
    return {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}[shell]


def candidates(parser: argparse.ArgumentParser, words: Sequence[str], cword: int) -> list[str]:
    """What may stand at ``words[cword]`` (``words[0]`` is the program): lines of
    ``word<TAB>description`` starting with what is typed there, or ``FILES``."""
    typed = words[cword] if cword < len(words) else ""
    current, expecting = parser, None
    positionals = 0
    i = 1
    while i < cword:
        word = words[i]
        option = _option(current, word)
        if option is not None:
            if option.nargs != 0 and "=" not in word:
                expecting = option if i + 1 == cword else None
                i += 1
        elif not word.startswith("-"):
            sub = _subcommands(current)
            if sub is not None and word in sub.choices:
                current, positionals = sub.choices[word], 0
            else:
                positionals += 1
        i += 1
    if expecting is not None:
        if expecting.choices:
            return [c for c in map(str, expecting.choices) if c.startswith(typed)]
        return [FILES]
    if typed.startswith("-"):
        return sorted(f"{o}\t{h}" for o, h in _options(current) if o.startswith(typed))
    sub = _subcommands(current)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        return [f"{name}\t{helps.get(name, '')}" for name in sub.choices if name.startswith(typed)]
    wanted = [a for a in current._actions if not a.option_strings and a.dest != argparse.SUPPRESS]
    if wanted and wanted[min(positionals, len(wanted) - 1)].choices:
        choices = wanted[min(positionals, len(wanted) - 1)].choices or ()
        return [c for c in map(str, choices) if c.startswith(typed)]
    return [FILES]


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    return parser._option_string_actions.get(word.split("=", 1)[0]) if word.startswith("-") else None


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option.startswith("--") or len(action.option_strings) == 1:
                yield option, (action.help or "").replace("\n", " ")
