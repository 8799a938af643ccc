"""A third party's plugin, installed from its own folder: a converter that copies a model folder."""

from __future__ import annotations

import shutil

import attrs

from slmdeploy.plugin import Converter, OnnxModel, hookimpl, option


@attrs.define
class CopyOptions:
    marker: str = option("example", help="text written to marker.txt")


class ExampleConverter(Converter):
    PLUGIN_NAME = "example-copy"
    Options = CopyOptions

    def run(self, artifact, output_dir):
        shutil.copytree(artifact.path, output_dir, dirs_exist_ok=True)
        (output_dir / "marker.txt").write_text(self.options.marker, encoding="utf-8")
        return OnnxModel(output_dir)


@hookimpl
def slmdeploy_register_converters():
    return [ExampleConverter]
