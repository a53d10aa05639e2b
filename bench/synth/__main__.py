"""`python -m bench.synth`: write a folder of generated digit fields with labels.csv and truth.jsonl.

python -m bench.synth OUT --kind comb --count 300 --split test   # 5-digit comb-box fields
python -m bench.synth OUT --kind free --length 3 8 --sheet sheet.png
"""

from __future__ import annotations

from pathlib import Path

import click

from bench.synth.fields import STYLES, FieldStyle, render_field
from bench.synth.fieldset import contact_sheet, write_fields
from bench.synth.glyphs import DigitPool
from bench.synth.mnist import load_mnist


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(sorted(STYLES)), default="comb", show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--length", type=click.IntRange(min=1), nargs=2, default=None, help="Digits per field, min max.")
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="MNIST digits to draw from: train for training and tuning, test for reported figures.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, required=True, type=click.Path(path_type=Path))
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), help="Also save a contact sheet of 12.")
def main(
    out: Path,
    kind: str,
    count: int,
    length: tuple[int, int] | None,
    split: str,
    seed: int,
    data_root: Path,
    sheet: Path | None,
) -> None:
    """Write COUNT generated fields into OUT."""
    style = STYLES[kind]
    if length:
        style = FieldStyle(**{**vars(style), "length": (min(length), max(length))})
    pool = DigitPool(*load_mnist(data_root, train=split == "train"))
    truth = write_fields(out, pool, count, style, seed=seed)
    click.echo(f"wrote {len(truth)} {kind} fields from MNIST {split} digits to {out}")
    if sheet:
        contact_sheet([render_field(pool, (seed, i), style) for i in range(min(12, count))], boxes=True).save(sheet)
        click.echo(f"wrote {sheet}")


if __name__ == "__main__":
    main()
