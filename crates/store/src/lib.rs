//! A shoal store member.
