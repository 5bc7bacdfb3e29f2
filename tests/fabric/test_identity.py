"""Identity: minting, persisting and reloading a node's secret key, and the labels it is named by."""

from __future__ import annotations

import re
import stat

import pytest

from fabric.errors import ConfigError, IdentityError
from fabric.identity import (
    NODE_TYPES,
    Identity,
    check_mesh_label,
    check_node_type,
    load_or_mint,
    node_name,
)


def test_mint_persists_a_32_byte_key_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "identity.key"  # the parent does not exist yet
    identity = load_or_mint(path)
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) == 32
    assert data == identity.secret_key
    assert identity.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reload_gives_the_same_id_and_name(tmp_path):
    path = tmp_path / "identity.key"
    first = load_or_mint(path)
    second = load_or_mint(path)
    assert second.secret_key == first.secret_key
    assert second.node_id == first.node_id
    assert node_name("mesh1", "broker", second.node_id) == node_name("mesh1", "broker", first.node_id)
    # ... and the file was not rewritten by the reload
    assert path.read_bytes() == first.secret_key


def test_two_mints_in_different_places_differ(tmp_path):
    a = load_or_mint(tmp_path / "a.key")
    b = load_or_mint(tmp_path / "b.key")
    assert a.node_id != b.node_id


def test_node_id_is_64_lower_hex():
    node_id = Identity.generate().node_id
    assert re.fullmatch(r"[0-9a-f]{64}", node_id)


def test_name_format_is_mesh_type_and_first_6_hex_of_id(tmp_path):
    identity = load_or_mint(tmp_path / "identity.key")
    name = node_name("mesh1", "gateway", identity.node_id)
    assert re.fullmatch(r"mesh1\.gateway\.[0-9a-f]{6}", name)
    assert name.split(".")[2] == identity.node_id[:6]


def test_sign_produces_a_64_byte_signature_that_verifies():
    from fabric.node import verify_signature

    identity = Identity.generate()
    signature = identity.sign(b"hello")
    assert len(signature) == 64
    assert verify_signature(identity.node_id, b"hello", signature)
    assert not verify_signature(identity.node_id, b"hellO", signature)
    assert not verify_signature(Identity.generate().node_id, b"hello", signature)


@pytest.mark.parametrize("size", [0, 5, 31, 33, 64])
def test_corrupt_file_raises_and_is_not_replaced(tmp_path, size):
    path = tmp_path / "identity.key"
    content = bytes(range(size))
    path.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        load_or_mint(path)
    message = str(info.value)
    assert str(path) in message
    assert "corrupt" in message
    assert "32-byte" in message
    assert f"found {size} bytes" in message
    assert "delete it" in message  # says what to do about it
    assert path.read_bytes() == content


def test_unreadable_path_a_directory_raises_identity_error(tmp_path):
    path = tmp_path / "identity.key"
    path.mkdir()
    with pytest.raises(IdentityError) as info:
        load_or_mint(path)
    assert "cannot read identity file" in str(info.value)
    assert str(path) in str(info.value)
    assert path.is_dir()  # nothing replaced it


def test_path_under_a_regular_file_raises_identity_error(tmp_path):
    # the parent "directory" is a file: reading fails with NotADirectoryError, not FileNotFoundError
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    with pytest.raises(IdentityError):
        load_or_mint(blocker / "identity.key")
    assert blocker.read_bytes() == b"x"


@pytest.mark.parametrize("mesh", ["mesh1", "a", "m-1_x", "0mesh", "a" * 63])
def test_check_mesh_label_accepts_valid_labels(mesh):
    assert check_mesh_label(mesh) == mesh


@pytest.mark.parametrize("mesh", [None, "", "Mesh1", "a.b", "a" * 64, "-mesh", "_mesh", "mesh 1", "mésh", "mesh1\n"])
def test_check_mesh_label_rejects_bad_labels_mentioning_the_flag(mesh):
    with pytest.raises(ConfigError) as info:
        check_mesh_label(mesh)
    message = str(info.value)
    assert "--mesh" in message  # says which flag to fix
    assert "MESHFABRIC_MESH" in message
    assert "mesh1" in message  # an example of a valid label
    if mesh:
        assert repr(mesh) in message


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_check_node_type_accepts_every_known_type(node_type):
    assert check_node_type(node_type) == node_type


@pytest.mark.parametrize("node_type", [None, "", "toaster", "Broker", "broker "])
def test_check_node_type_rejects_unknown_types_listing_the_valid_ones(node_type):
    with pytest.raises(ConfigError) as info:
        check_node_type(node_type)
    message = str(info.value)
    assert repr(node_type) in message
    for valid in NODE_TYPES:
        assert valid in message
