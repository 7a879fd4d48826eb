"""Pin moves: carry the base layer and every vendor patch set to a new upstream pin (flow 6).

``inv refresh --backend B --to <version|commit>`` (``flagscale.refresh.flow``) moves the pin,
carries ``backends/B/`` over three ways (``layer_carry``) and each device type's sets
(``set_carry`` over ``carry``), stops on conflicts in a scratch checkout (``checkout``), proves
the result trains (``prove``), records it as ordinary commits (``chain``, ``publish``) and
reports it (``report``). ``inv bisect-upstream`` (``bisect``) names the upstream step that broke
a device's sets. Guide: docs/refresh.md.
"""
