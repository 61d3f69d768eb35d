"""The examples' training progress: a tqdm bar showing the latest loss, or the plain
iterable when tqdm is not installed (it comes with `pip install -e '.[examples]'`)."""


def with_latest_loss(iterable, losses: list[float], name: str = "loss", spec=".4f"):
    """Iterate over `iterable` under a bar whose postfix is `losses[-1]`, read before
    each item, so that the loop appends to `losses` as it goes."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    bar = tqdm(iterable, desc="Adam", leave=False)

    def items():
        for item in bar:
            if losses:
                bar.set_postfix({name: format(losses[-1], spec)}, refresh=False)
            yield item

    return items()
